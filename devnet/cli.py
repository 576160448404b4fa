"""``qenex-devnet``: a local multi-validator QENEX network on one machine.

    qenex-devnet up [--fresh] [--exit-after-demo] [--validators 4] [--accounts 100] [--transfers 1000]
    qenex-devnet init [--validators 4]           # generate .devnet/ only (for docker compose)
    qenex-devnet bench [--rate 1500] [--duration 60]  # open-loop load on a fresh devnet: tx/s, latency, CPU
    qenex-devnet bench-state [--sizes 10000,100000,1000000]   # state tree commit cost and proofs on LevelDB
    qenex-devnet bench-vm [--transfers 40000] [--swaps 10000]  # VM transfers/s and swaps/s on LevelDB, one process
    qenex-devnet compose [--out devnet/docker-compose.yml]   # the compose file of the layout
    qenex-devnet simulate --scenarios N --seed S [--sizes 4,7]   # seeded PBFT fault scenarios
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio
from rich.console import Console
from rich.live import Live
from rich.text import Text

from devnet.compose import DOCKER_ROOT
from devnet.layout import BASE_P2P_PORT, BASE_RPC_PORT, DEFAULT_ROOT, Layout, generate
from devnet.processes import NodeFailed, Running, check_alive, start_node, stop_node
from devnet.workload import Wallets, check_balances, run_demo, summarize_latency

console = Console(highlight=False, soft_wrap=True)


@dataclass
class Progress:
    """Live view of the network: per-node height and committed workload transactions."""

    layout: Layout
    wallets: Wallets
    running: list[Running]
    committed: int = 0
    planned: int = 0
    heights: dict[str, int | str] = field(default_factory=dict)
    peers: dict[str, int] = field(default_factory=dict)

    def render(self) -> Text:
        """One status line."""
        hs = " ".join(f"{name}={h}" for name, h in self.heights.items())
        work = f"committed {self.committed}/{self.planned} txs | " if self.planned else ""
        return Text(f"{work}heights {hs}")

    async def poll(self) -> None:
        """Refresh heights and peers; raise ``NodeFailed`` if a process died."""
        check_alive(self.running)
        for node, client in zip(self.layout.nodes, self.wallets.clients, strict=True):
            try:
                status = await client.call("qnx_status")
                self.heights[node.name] = status["height"]
                self.peers[node.name] = status["peers"]
            except Exception:  # not up yet, or busy: shown as '?'
                self.heights[node.name] = "?"
                self.peers[node.name] = 0

    async def run(self, *, interval: float = 0.5) -> None:
        """Poll forever, drawing a live line on a terminal (a line every 5 s otherwise)."""
        if console.is_terminal:
            with Live(self.render(), console=console, refresh_per_second=4, transient=True) as live:
                while True:
                    await self.poll()
                    live.update(self.render())
                    await trio.sleep(interval)
        else:
            last = 0.0
            while True:
                await self.poll()
                if time.monotonic() - last >= 5:
                    console.print(self.render())
                    last = time.monotonic()
                await trio.sleep(interval)


async def wait_ready(progress: Progress, timeout: float) -> None:
    """Wait until every node answers, is connected to all others and all report one height."""
    n = len(progress.layout.nodes)
    with trio.fail_after(timeout):
        while True:
            await progress.poll()
            heights = set(progress.heights.values())
            if "?" not in heights and len(heights) == 1 and all(p == n - 1 for p in progress.peers.values()):
                return
            await trio.sleep(0.2)


async def common_state(progress: Progress, timeout: float = 60.0) -> tuple[int, list[tuple[str, int, str, str]]]:
    """Wait until every node has reached one height H; return H and (name, height, root@H, hash@H)."""
    with trio.fail_after(timeout):
        await progress.poll()
        target = max(h for h in progress.heights.values() if isinstance(h, int))
        while True:
            await progress.poll()
            hs = [h for h in progress.heights.values()]
            if all(isinstance(h, int) and h >= target for h in hs):
                break
            await trio.sleep(0.2)
    rows = []
    for node, client in zip(progress.layout.nodes, progress.wallets.clients, strict=True):
        block = await client.call("qnx_getBlockByNumber", target, False)
        status = await client.call("qnx_status")
        rows.append((node.name, status["height"], block["header"]["stateRoot"], block["hash"]))
    return target, rows


async def _up(args: argparse.Namespace) -> int:
    root = Path(args.home)
    layout = None if args.fresh else Layout.load(root)
    if layout is not None and len(layout.nodes) != args.validators and args.validators_given:
        console.print(f"[yellow]{root} holds a {len(layout.nodes)}-validator devnet; use --fresh for a new one")
    if layout is None:
        layout = generate(root, validators=args.validators, base_rpc_port=args.base_rpc_port,
                          base_p2p_port=args.base_p2p_port)
        console.print(f"generated chain [bold]{layout.chain_id}[/] with {len(layout.nodes)} validators in {root}/")
    else:
        console.print(f"restarting chain [bold]{layout.chain_id}[/] from {root}/ (--fresh starts a new one)")
    running: list[Running] = []
    wallets = Wallets([n.rpc_url for n in layout.nodes])
    ok = False
    terminated = False
    try:
        async with trio.open_nursery() as nursery:

            async def on_sigterm() -> None:
                nonlocal terminated
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                    async for _ in signals:
                        terminated = True
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(on_sigterm)
            for node in layout.nodes:
                running.append(await start_node(node))
            console.print("started " + ", ".join(f"{r.node.name} (pid {r.process.pid})" for r in running))
            progress = Progress(layout, wallets, running)
            await wait_ready(progress, timeout=args.ready_timeout)
            start_height = next(iter(progress.heights.values()))
            console.print(f"all {len(layout.nodes)} validators connected at height {start_height}")
            nursery.start_soon(progress.run)
            progress.planned = 2 + args.accounts + args.transfers
            result = await run_demo(wallets, layout.chain_id, accounts=args.accounts, transfers=args.transfers,
                                    seed=args.seed, progress=progress)
            problems = list(result.problems)
            problems += await check_balances(wallets, result)
            height, rows = await common_state(progress)
            ok = _summary(layout, result, start_height, height, rows, problems)
            if args.exit_after_demo:
                nursery.cancel_scope.cancel()
            else:
                console.print("\nThe network keeps running. JSON-RPC endpoints:")
                for node in layout.nodes:
                    console.print(f"  {node.name}: {node.rpc_url}   log: {node.log_path}")
                console.print("Press Ctrl-C to stop every node.")
                nursery.start_soon(_watch_nodes, running)
    except (NodeFailed, trio.TooSlowError, BaseExceptionGroup) as raised:
        failure = _devnet_failure(raised)
        if failure is None:
            raise
        if isinstance(failure, NodeFailed):
            console.print(f"[red]devnet failed: {failure}")
        else:
            console.print("[red]devnet failed: the network did not become ready in time. Logs:")
            for node in layout.nodes:
                console.print(f"  {node.name}: {node.log_path}")
        return 1
    finally:
        with trio.CancelScope(shield=True):
            await wallets.aclose()
            for r in running:
                await stop_node(r)
            if running:
                console.print(f"stopped {len(running)} validator processes")
    if terminated:
        console.print("terminated by signal")
        return 143
    return 0 if ok else 1


def _devnet_failure(raised: BaseException) -> BaseException | None:
    """The ``NodeFailed`` or ``TooSlowError`` inside ``raised`` (Trio wraps task errors in groups)."""
    if isinstance(raised, NodeFailed | trio.TooSlowError):
        return raised
    if isinstance(raised, BaseExceptionGroup):
        for inner in raised.exceptions:
            found = _devnet_failure(inner)
            if found is not None:
                return found
    return None


async def _watch_nodes(running: list[Running]) -> None:
    """While the network is left running, report a node that dies."""
    while True:
        check_alive(running)
        await trio.sleep(1.0)


def _summary(layout: Layout, result, start_height: int, height: int,  # type: ignore[no-untyped-def]
             rows: list[tuple[str, int, str, str]], problems: list[str]) -> bool:
    t = result.transfers
    all_lat = result.setup.latencies + result.funding.latencies + t.latencies
    console.print("\n[bold]QENEX devnet demo summary[/]")
    console.print(f"  chain id            {layout.chain_id}")
    console.print(f"  blocks              {height - start_height} committed during the demo "
                  f"(height {start_height} -> {height})")
    console.print(f"  transactions        {len(all_lat)} committed (1 deploy, 1 mint, "
                  f"{len(result.funding.latencies)} funding, {len(t.latencies)} transfers)")
    console.print(f"  transfer phase      {t.elapsed:.2f} s, {t.tps:.1f} tx/s")
    console.print(f"  finality latency    {summarize_latency(t.latencies)}")
    console.print(f"  state at height {height}:")
    for name, h, root, block_hash in rows:
        console.print(f"    {name}  height {h:>5}  state root {root}  block {block_hash[:18]}…")
    roots = {r[2] for r in rows}
    hashes = {r[3] for r in rows}
    if len(roots) != 1 or len(hashes) != 1:
        problems.append(f"nodes disagree at height {height}: {len(roots)} state roots, {len(hashes)} block hashes")
    console.print(f"  balances            {len(result.expected)} accounts checked on all nodes; "
                  f"sum {sum(result.expected.values())} == minted {result.minted}")
    if problems:
        console.print(f"[red]  FAILED checks ({len(problems)}):")
        for p in problems[:30]:
            console.print(f"    - {p}")
        return False
    console.print("[green]  all checks passed: identical state roots, every balance as expected")
    return True


async def _bench(args: argparse.Namespace) -> int:
    from devnet.bench import run_bench

    return await run_bench(args, console)


def _init(args: argparse.Namespace) -> int:
    layout = generate(Path(args.home), validators=args.validators, base_rpc_port=args.base_rpc_port,
                      base_p2p_port=args.base_p2p_port)
    console.print(f"generated chain {layout.chain_id} with {len(layout.nodes)} validators in {args.home}/")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    """Run seeded PBFT fault scenarios in one process (consensus/simulation.py)."""
    import collections
    import random

    from consensus.simulation import LivenessFailure, SafetyViolation, random_schedule, run_scenario

    sizes = [int(x) for x in str(args.sizes).split(",")]
    if args.replay is not None:
        plan = [(args.replay, n) for n in sizes]
    else:
        master = random.Random(args.seed)
        plan = [(master.getrandbits(63), sizes[k % len(sizes)]) for k in range(args.scenarios)]
    kinds: collections.Counter[str] = collections.Counter()
    totals: collections.Counter[str] = collections.Counter()
    max_view = max_recovery = max_recovery_ms = max_backoff = 0
    started = time.perf_counter()
    for k, (seed, n) in enumerate(plan, 1):
        schedule = random_schedule(seed, n)
        try:
            result = run_scenario(schedule)
        except (SafetyViolation, LivenessFailure) as err:
            console.print(f"[red]scenario {k} FAILED (n={n}, seed {seed}): {type(err).__name__}: {err}")
            console.print(f"replay it exactly: qenex-devnet simulate --replay {seed} --sizes {n}")
            return 1
        kinds.update(f.split(" ")[0].split(":")[0] for f in result.faults)
        max_view = max(max_view, result.max_view)
        max_recovery = max(max_recovery, result.recovery_rounds)
        max_recovery_ms = max(max_recovery_ms, result.recovery_ms)
        max_backoff = max(max_backoff, result.max_backoff)
        totals.update(rejected=result.rejected, decode_errors=result.decode_errors, garbage=result.garbage,
                      delayed=result.delayed, evidence=result.evidence, expiries=result.timer_expiries)
        if k % 50 == 0 or k == len(plan):
            console.print(f"{k}/{len(plan)} scenarios passed ({time.perf_counter() - started:.1f} s)")
    console.print(f"\n[bold]{len(plan)} scenarios[/] (sizes {args.sizes}, master seed {args.seed}): "
                  "no fork, every honest replica moved on after the faults stopped")
    console.print("  faults injected: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    console.print(f"  highest view reached {max_view}; longest recovery {max_recovery} rounds "
                  f"({max_recovery_ms / 1000:.2f} s virtual); {totals['expiries']} view-change timer expiries, "
                  f"longest backoff 2^{min(max_backoff, 5)} x the base ({max_backoff} expiries in a row)")
    console.print(f"  {totals['delayed']} messages delayed; {totals['garbage']} garbage frames sent; "
                  f"{totals['rejected']} forged or malformed messages refused ({totals['decode_errors']} by the "
                  f"wire decoder); {totals['evidence']} equivocation evidence records")
    return 0


def _compose(args: argparse.Namespace) -> int:
    from devnet.compose import generate_docker, render_compose

    root = Path(args.home)
    if args.observers < 0:
        console.print("[red]--observers must be 0 or more")
        return 2
    if not args.file_only:
        if (root / "devnet.json").exists() and not args.fresh:
            console.print(f"[red]{root}/ already holds a devnet; --fresh replaces it (new keys, new chain), "
                          "--file-only rewrites only the compose file")
            return 2
        layout = generate_docker(root, args.validators, args.observers)
        console.print(f"generated chain {layout.chain_id}: {args.validators} validators, {args.observers} "
                      f"observers in {root}/")
    text = render_compose(args.validators, args.observers, root=args.home, base_rpc_port=args.base_rpc_port)
    Path(args.out).write_text(text)
    console.print(f"wrote {args.out}; start it with: docker compose -f {args.out} up --build")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qenex-devnet``."""
    p = argparse.ArgumentParser(prog="qenex-devnet", description="local QENEX Ledger network")
    sub = p.add_subparsers(dest="command", required=True)

    def common(s: argparse.ArgumentParser) -> None:
        s.add_argument("--home", default=str(DEFAULT_ROOT), help="devnet directory (default .devnet)")
        s.add_argument("--validators", type=int, default=None)
        s.add_argument("--base-rpc-port", type=int, default=BASE_RPC_PORT)
        s.add_argument("--base-p2p-port", type=int, default=BASE_P2P_PORT)

    s = sub.add_parser("up", help="start the network and run the demo workload")
    common(s)
    s.add_argument("--fresh", action="store_true", help="generate a new chain instead of restarting .devnet/")
    s.add_argument("--exit-after-demo", action="store_true",
                   help="stop after the summary; status 0 iff all checks held")
    s.add_argument("--accounts", type=int, default=100)
    s.add_argument("--transfers", type=int, default=1000)
    s.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    s.add_argument("--ready-timeout", type=float, default=90.0)
    s = sub.add_parser("init", help="generate the devnet directory only")
    common(s)
    s = sub.add_parser("bench", help="sustained load against a fresh devnet")
    common(s)
    s.set_defaults(home=".devnet-bench", base_rpc_port=18545, base_p2p_port=36656)
    from devnet.bench import add_arguments as bench_arguments

    bench_arguments(s)
    s = sub.add_parser("bench-state", help="state tree (JMT) commit cost, proof size and verify time on LevelDB")
    from devnet.bench_state import add_arguments as bench_state_arguments

    bench_state_arguments(s)
    s = sub.add_parser("bench-vm", help="token transfers/s and AMM swaps/s of the VM on LevelDB, one process")
    from devnet.bench_vm import add_arguments as bench_vm_arguments

    bench_vm_arguments(s)
    s = sub.add_parser("simulate", help="seeded PBFT fault scenarios in one process (no sockets)")
    s.add_argument("--scenarios", type=int, default=200)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--sizes", default="4,7", help="validator counts, comma separated")
    s.add_argument("--replay", type=int, default=None, help="run exactly the scenario of this seed")
    s = sub.add_parser("compose", help="write keys, genesis and homes for Docker, and their docker-compose.yml")
    common(s)
    s.set_defaults(home=DOCKER_ROOT)
    s.add_argument("--observers", type=int, default=0, help="non-validator nodes that follow the chain")
    s.add_argument("--out", default="devnet/docker-compose.yml")
    s.add_argument("--fresh", action="store_true", help="replace an existing tree under --home")
    s.add_argument("--file-only", action="store_true", help="write only the compose file (homes exist)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``qenex-devnet``."""
    args = build_parser().parse_args(argv)
    args.validators_given = getattr(args, "validators", None) is not None
    if getattr(args, "validators", None) is None:
        args.validators = 4
    if args.command == "up":
        try:
            return trio.run(_up, args)
        except KeyboardInterrupt:
            console.print("interrupted")
            return 130
    if args.command == "bench":
        return trio.run(_bench, args)
    if args.command == "bench-state":
        from devnet.bench_state import run_bench_state

        return run_bench_state(args, console)
    if args.command == "bench-vm":
        from devnet.bench_vm import run_bench_vm

        return run_bench_vm(args, console)
    if args.command == "init":
        return _init(args)
    if args.command == "simulate":
        return _simulate(args)
    return _compose(args)


if __name__ == "__main__":
    sys.exit(main())
