"""The demo workload and the benchmark load, through JSON-RPC only, as a wallet would.

Demo: a minter deploys a token (6 decimals) and mints the supply to a treasury; the treasury
funds ``accounts`` accounts; then ``transfers`` signed transfers between random accounts
(seeded) are sent across every validator's RPC endpoint, each waiting for its committed receipt.
Every balance the chain reports is compared with what the workload expects.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from crypto.keys import KeyPair
from node.rpc.client import AsyncClient, deploy_token_call, sign_transaction, transfer_call
from node.rpc.errors import RPCError
from state.types import Call, Transaction

DECIMALS = 6
SUPPLY = 1_000_000_000 * 10**DECIMALS
"""Minted to the treasury: one billion tokens, in base units."""
FUNDING = 1_000_000 * 10**DECIMALS
"""Each account's starting balance, base units."""


@dataclass
class Stats:
    """Latencies (seconds) of committed transactions and the wall time of a phase."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def elapsed(self) -> float:
        """Seconds from the first submission to the last receipt."""
        return max(self.finished - self.started, 1e-9)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile latency in seconds (nearest rank), 0 if none."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    @property
    def tps(self) -> float:
        """Committed transactions per second over the phase."""
        return len(self.latencies) / self.elapsed


class Wallets:
    """RPC clients for every validator, used round-robin."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.clients = [AsyncClient(u, timeout=120.0, max_connections=200) for u in urls]
        self._next = 0

    def pick(self) -> AsyncClient:
        """The next client, round-robin."""
        c = self.clients[self._next % len(self.clients)]
        self._next += 1
        return c

    async def aclose(self) -> None:
        """Close every client."""
        for c in self.clients:
            await c.aclose()


RETRIES = 5
"""Attempts per transaction when the HTTP connection fails (not when the node answers an error)."""


def _fail(stats: Stats, message: str) -> None:
    stats.failures.append(message)
    if len(stats.failures) <= 3:  # say it now, not only in the summary
        print(f"workload failure: {message}", flush=True)


async def submit_all(wallets: Wallets, txs: Sequence[Transaction], *, concurrency: int = 200,
                     progress: Any = None) -> Stats:
    """Send ``txs`` as wallets do and wait until each is committed; collect finality latencies.

    Each sender submits its own transactions in nonce order (``qnx_sendRawTransaction``, spread
    over the endpoints) without waiting for blocks; every admitted transaction then gets a waiter
    (``qnx_sendRawTransactionAndWait`` of the same bytes is idempotent) that returns its receipt.
    Submission never waits on a commit, so no ordering of tasks can deadlock the workload (a later
    nonce holding a slot while the earlier one queues behind it). Latency runs from the moment the
    transaction is sent to the moment its receipt (of the committed block) is back.
    """
    stats = Stats(started=time.perf_counter())
    submit_slots = trio.CapacityLimiter(64)
    wait_slots = trio.CapacityLimiter(concurrency)
    by_sender: dict[bytes, list[Transaction]] = {}
    for tx in txs:
        by_sender.setdefault(tx.body.sender, []).append(tx)

    async def call(client: AsyncClient, tx: Transaction, wait: bool) -> Any:
        for attempt in range(1, RETRIES + 1):
            try:
                return await client.send_transaction(tx, wait=wait, timeout=110.0)
            except httpx.TransportError as err:
                # the same transaction again is idempotent: a wallet retries a dropped connection
                if attempt == RETRIES:
                    raise RPCError(-32603, f"{type(err).__name__}: {err!r}") from err
                stats.retries += 1
                await trio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    async def wait_for(tx: Transaction, client: AsyncClient, t0: float) -> None:
        async with wait_slots:
            try:
                receipt = await call(client, tx, wait=True)
            except RPCError as err:
                _fail(stats, f"0x{tx.hash.hex()[:16]} via {client.url}: {err}")
                return
        stats.latencies.append(time.perf_counter() - t0)
        if receipt.get("status") != "success":
            _fail(stats, f"0x{tx.hash.hex()[:16]} reverted: {receipt.get('revertReason')}")
        if progress is not None:
            progress.committed += 1

    async def sender(own: list[Transaction], nursery: trio.Nursery) -> None:
        for tx in sorted(own, key=lambda t: t.body.nonce):
            client = wallets.pick()
            async with submit_slots:
                t0 = time.perf_counter()
                try:
                    await call(client, tx, wait=False)
                except RPCError as err:
                    _fail(stats, f"0x{tx.hash.hex()[:16]} via {client.url}: {err}")
                    return  # later nonces of this sender can not commit either
            nursery.start_soon(wait_for, tx, client, t0)

    async with trio.open_nursery() as nursery:
        for own in by_sender.values():
            nursery.start_soon(sender, own, nursery)
    stats.finished = time.perf_counter()
    return stats


@dataclass
class DemoResult:
    """What the demo did and what it found."""

    token: bytes
    minted: int
    setup: Stats
    funding: Stats
    transfers: Stats
    expected: dict[bytes, int]
    problems: list[str]


async def run_demo(wallets: Wallets, chain_id: str, *, accounts: int, transfers: int, seed: int,
                   progress: Any = None) -> DemoResult:
    """Run the demo workload (see the module docstring) and check every balance."""
    rng = random.Random(seed)
    minter, treasury = KeyPair.generate(), KeyPair.generate()
    users = [KeyPair.generate() for _ in range(accounts)]
    problems: list[str] = []

    # 1. deploy and mint (one transaction: deploy, then mint through the returned address is not
    #    possible in one tx, so two)
    deploy = sign_transaction(minter, chain_id, 0, [deploy_token_call("QENEX Demo Dollar", "QDD", DECIMALS,
                                                                      minter.address)], gas_limit=200_000)
    setup = await submit_all(wallets, [deploy], progress=progress)
    if setup.failures:
        raise RuntimeError(f"token deployment failed: {setup.failures}")
    receipt = await wallets.clients[0].call("qnx_getTransactionReceipt", "0x" + deploy.hash.hex())
    token = bytes.fromhex(receipt["output"][0][2:])
    mint = sign_transaction(minter, chain_id, 1, [Call(token, "mint", (treasury.address, SUPPLY))])  # type: ignore[arg-type]
    mint_stats = await submit_all(wallets, [mint], progress=progress)
    setup.latencies += mint_stats.latencies
    setup.failures += mint_stats.failures
    setup.finished = mint_stats.finished

    # 2. fund every account from the treasury (nonces 0..accounts-1, sent concurrently)
    expected: dict[bytes, int] = {treasury.address: SUPPLY, minter.address: 0}
    funding_txs = []
    for i, u in enumerate(users):
        funding_txs.append(sign_transaction(treasury, chain_id, i, [transfer_call(token, u.address, FUNDING)]))
        expected[treasury.address] -= FUNDING
        expected[u.address] = FUNDING
    funding = await submit_all(wallets, funding_txs, progress=progress)

    # 3. random transfers between accounts; each sender's nonces in order
    nonces = {u.address: 0 for u in users}
    planned: list[tuple[int, Transaction]] = []
    for _ in range(transfers):
        s, r = rng.sample(range(accounts), 2) if accounts > 1 else (0, 0)
        amount = rng.randint(1, 1000 * 10**DECIMALS)
        sender, recipient = users[s], users[r]
        nonce = nonces[sender.address]
        nonces[sender.address] += 1
        planned.append((nonce, sign_transaction(sender, chain_id, nonce,
                                                [transfer_call(token, recipient.address, amount)])))
        expected[sender.address] -= amount
        expected[recipient.address] += amount
    transfer_stats = await submit_all(wallets, [tx for _, tx in planned], progress=progress)

    for stats, name in ((setup, "setup"), (funding, "funding"), (transfer_stats, "transfers")):
        problems += [f"{name}: {f}" for f in stats.failures[:20]]
    return DemoResult(token, SUPPLY, setup, funding, transfer_stats, expected, problems)


async def check_balances(wallets: Wallets, result: DemoResult) -> list[str]:
    """Compare every balance (on every node in turn) with the expected one; check the supply."""
    problems: list[str] = []
    total = 0
    for i, (address, want) in enumerate(sorted(result.expected.items())):
        client = wallets.clients[i % len(wallets.clients)]
        got = await client.balance(address, result.token)
        total += got
        if got != want:
            problems.append(f"balance of 0x{address.hex()} is {got} on {client.url}, expected {want}")
    token = await wallets.clients[0].call("qnx_getToken", "0x" + result.token.hex())
    if int(token["totalSupply"]) != result.minted:
        problems.append(f"total supply {token['totalSupply']} != minted {result.minted}")
    if total != result.minted:
        problems.append(f"sum of balances {total} != minted supply {result.minted}")
    return problems


def summarize_latency(latencies: Sequence[float]) -> str:
    """``p50 … ms, p99 … ms, mean … ms``."""
    if not latencies:
        return "no samples"
    s = Stats(latencies=list(latencies))
    return (f"p50 {s.percentile(50) * 1000:.0f} ms, p99 {s.percentile(99) * 1000:.0f} ms, "
            f"mean {statistics.fmean(latencies) * 1000:.0f} ms")
