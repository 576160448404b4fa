"""``qenex-devnet bench``: sustained load of pre-signed transfers against a fresh devnet.

Each of ``--workers`` funded accounts sends its own pre-signed transfers one after another
(``qnx_sendRawTransactionAndWait``), round-robin over every validator's endpoint, for
``--duration`` seconds. Printed: finalized tx/s, finality latency p50/p99, blocks and
transactions per block, per-validator CPU and resident memory (from /proc), and the ceiling set by
signature verification measured in the same run (2 cores / (validators x verify time)).

With ``--kill-primary-after S`` the primary of the current view is killed (SIGKILL) S seconds into
the load, which goes on against the survivors (a sender whose node died resends its transaction to
another one: submission is idempotent). Then also printed: the stall (from the kill to the first
block the survivors commit, which includes the view-change timeout), the view installed, and the
finality latency of the transactions committed before the kill, of those in flight across it, and
of those submitted after the first post-crash commit.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import trio
from rich.console import Console

from crypto.keys import KeyPair
from crypto.signatures import ML_DSA_44, Context
from devnet.layout import generate
from devnet.processes import Running, start_node, stop_node
from devnet.workload import FUNDING, SUPPLY, Stats, Wallets, submit_all
from node.rpc.client import deploy_token_call, sign_transaction, transfer_call
from state.types import Call, Transaction

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def _rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (Linux /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def verify_cost_seconds(samples: int = 2000) -> float:
    """Measured seconds per ML-DSA-44 verification of a transaction-sized message."""
    key = KeyPair.generate(ML_DSA_44)
    msg = os.urandom(3900)
    sig = key.sign(Context.TRANSACTION, msg)
    t0 = time.perf_counter()
    for _ in range(samples):
        ML_DSA_44.verify(key.public_key, Context.TRANSACTION, msg, sig)
    return (time.perf_counter() - t0) / samples


async def run_bench(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmark described in the module docstring; 0 when no transaction failed."""
    layout = generate(Path(args.home), validators=args.validators, base_rpc_port=args.base_rpc_port,
                      base_p2p_port=args.base_p2p_port)
    console.print(f"bench: fresh {len(layout.nodes)}-validator devnet in {args.home}/, {args.workers} senders, "
                  f"{args.duration:.0f} s of load")
    running: list[Running] = []
    wallets = Wallets([n.rpc_url for n in layout.nodes])
    try:
        for node in layout.nodes:
            running.append(await start_node(node))
        from devnet.cli import Progress, wait_ready

        progress = Progress(layout, wallets, running)
        await wait_ready(progress, timeout=90)
        chain = layout.chain_id
        minter, treasury = KeyPair.generate(), KeyPair.generate()
        workers = [KeyPair.generate() for _ in range(args.workers)]
        deploy = sign_transaction(minter, chain, 0, [deploy_token_call("Bench", "BNC", 6, minter.address)], 200_000)
        await submit_all(wallets, [deploy])
        receipt = await wallets.clients[0].call("qnx_getTransactionReceipt", "0x" + deploy.hash.hex())
        token = bytes.fromhex(receipt["output"][0][2:])
        await submit_all(wallets, [sign_transaction(minter, chain, 1, [Call(token, "mint",  # type: ignore[arg-type]
                                                                            (treasury.address, SUPPLY))])])
        funding = await submit_all(wallets, [sign_transaction(treasury, chain, i, [transfer_call(token, w.address,
                                                                                                 FUNDING)])
                                             for i, w in enumerate(workers)])
        if funding.failures:
            console.print(f"[red]funding failed: {funding.failures[:3]}")
            return 1
        per_worker = max(5, int(args.duration * 4))
        console.print(f"pre-signing {per_worker * len(workers)} ML-DSA-44 transfers ...")
        sink = KeyPair.generate().address
        signed: list[list[Transaction]] = [
            [sign_transaction(w, chain, n, [transfer_call(token, sink, 1)]) for n in range(per_worker)] for w in workers
        ]
        start_status = await wallets.clients[0].call("qnx_status")
        cpu0 = {r.node.name: _cpu_seconds(r.process.pid) for r in running}
        stats = Stats(started=time.perf_counter())
        deadline = stats.started + args.duration
        exhausted = 0
        submitted: list[float] = []  # submission time of each committed transfer, beside stats.latencies
        dead: set[int] = set()
        crash = _Crash()

        async def worker(txs: list[Transaction], index: int) -> None:
            nonlocal exhausted
            node = index % len(wallets.clients)
            for tx in txs:
                if time.perf_counter() >= deadline:
                    return
                t0 = time.perf_counter()
                for _attempt in range(len(wallets.clients)):
                    try:
                        r = await wallets.clients[node].send_transaction(tx, wait=True, timeout=60)
                        break
                    except Exception as err:
                        if node not in dead:
                            stats.failures.append(f"{type(err).__name__}: {err}")
                            return
                        stats.retries += 1
                        node = (node + 1) % len(wallets.clients)  # its node died: resend elsewhere
                else:
                    stats.failures.append("no live node took the transaction")
                    return
                stats.latencies.append(time.perf_counter() - t0)
                submitted.append(t0)
                if r.get("status") != "success":
                    stats.failures.append(f"reverted: {r.get('revertReason')}")
            exhausted += 1

        async with trio.open_nursery() as nursery:
            for i, txs in enumerate(signed):
                nursery.start_soon(worker, txs, i)
            if args.kill_primary_after is not None:
                nursery.start_soon(_kill_primary, args.kill_primary_after, stats.started, wallets, running, dead,
                                   crash)
        stats.finished = time.perf_counter()
        cpu = {r.node.name: (_cpu_seconds(r.process.pid) - cpu0[r.node.name]) / stats.elapsed for r in running}
        rss = {r.node.name: _rss_mib(r.process.pid) for r in running}
        alive = next(i for i in range(len(wallets.clients)) if i not in dead)
        end_status = await wallets.clients[alive].call("qnx_status")
        blocks = end_status["height"] - start_status["height"]
        verify = verify_cost_seconds()
        ceiling = (os.cpu_count() or 1) / (len(layout.nodes) * verify)
        console.print("\n[bold]QENEX bench[/]")
        console.print(f"  finalized           {len(stats.latencies)} transfers in {stats.elapsed:.1f} s = "
                      f"[bold]{stats.tps:.1f} tx/s[/]")
        console.print(f"  finality latency    p50 {stats.percentile(50) * 1000:.0f} ms, "
                      f"p99 {stats.percentile(99) * 1000:.0f} ms")
        console.print(f"  blocks              {blocks} ({len(stats.latencies) / max(blocks, 1):.1f} tx/block)")
        for i, name in enumerate(cpu):
            if i in dead:
                console.print(f"  {name}              killed during the run")
                continue
            console.print(f"  {name}              CPU {cpu[name] * 100:.0f}%  RSS {rss[name]:.0f} MiB")
        console.print(f"  verify cost         {verify * 1e3:.3f} ms per ML-DSA-44 verification; ceiling "
                      f"{ceiling:.0f} tx/s ({stats.tps / ceiling * 100:.1f}% reached)")
        if crash.killed_at:
            _report_crash(console, crash, stats, submitted)
        if exhausted:
            console.print(f"  note: {exhausted} senders ran out of pre-signed transfers before the deadline")
        if stats.failures:
            console.print(f"[red]  {len(stats.failures)} failures, e.g. {stats.failures[:3]}")
            return 1
        return 0
    finally:
        with trio.CancelScope(shield=True):
            await wallets.aclose()
            for r in running:
                await stop_node(r)


@dataclass
class _Crash:
    """What ``_kill_primary`` saw: when (perf_counter seconds) and what it killed, when blocks resumed."""

    killed_at: float = 0.0
    victim: str = ""
    view_before: int = 0
    height_at_kill: int = 0
    resumed_at: float = 0.0
    view_after: int = 0


async def _kill_primary(after: float, started: float, wallets: Wallets, running: list[Running], dead: set[int],
                        crash: _Crash) -> None:
    """SIGKILL the primary of the current view ``after`` seconds into the load, then watch the survivors
    (every 20 ms) until they commit a block above the height at the kill."""
    await trio.sleep(max(0.0, started + after - time.perf_counter()))  # perf_counter base, not trio's clock
    status = await wallets.clients[0].call("qnx_status")
    victim = status["view"] % len(running)
    dead.add(victim)
    running[victim].process.kill()
    crash.killed_at = time.perf_counter()
    crash.victim, crash.view_before = running[victim].node.name, status["view"]
    await running[victim].process.wait()
    survivor = wallets.clients[(victim + 1) % len(running)]
    crash.height_at_kill = (await survivor.call("qnx_status"))["height"]
    with trio.move_on_after(120):
        while True:
            st = await survivor.call("qnx_status")
            if st["height"] > crash.height_at_kill:
                crash.resumed_at, crash.view_after = time.perf_counter(), st["view"]
                return
            await trio.sleep(0.02)


def _report_crash(console: Console, crash: _Crash, stats: Stats, submitted: list[float]) -> None:
    """Print the stall and the finality latency before and after the primary crash."""
    pairs = list(zip(submitted, stats.latencies, strict=True))
    before = Stats(latencies=[lat for t, lat in pairs if t + lat < crash.killed_at])
    caught = Stats(latencies=[lat for t, lat in pairs if t < crash.killed_at <= t + lat])
    after = Stats(latencies=[lat for t, lat in pairs if crash.resumed_at and t >= crash.resumed_at])
    console.print(f"  primary crash       killed {crash.victim} (primary of view {crash.view_before}) at height "
                  f"{crash.height_at_kill}")
    if crash.resumed_at:
        console.print(f"  stall               {crash.resumed_at - crash.killed_at:.2f} s from the kill to the next "
                      f"commit (view {crash.view_after}); {stats.retries} transactions resent to a live node")
    else:
        console.print("[red]  stall               no block committed within 120 s of the kill")
    console.print(f"  latency before      p50 {before.percentile(50) * 1000:.0f} ms, "
                  f"p99 {before.percentile(99) * 1000:.0f} ms ({len(before.latencies)} transfers)")
    console.print(f"  caught by the crash p50 {caught.percentile(50) * 1000:.0f} ms, "
                  f"max {max(caught.latencies, default=0) * 1000:.0f} ms ({len(caught.latencies)} transfers "
                  "submitted before the kill, committed after it)")
    console.print(f"  latency after       p50 {after.percentile(50) * 1000:.0f} ms, "
                  f"p99 {after.percentile(99) * 1000:.0f} ms ({len(after.latencies)} transfers)")
