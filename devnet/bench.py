"""``qenex-devnet bench``: open-loop load of pre-signed token transfers against a fresh devnet.

The load generator works like tm-load-test or Hyperledger Caliper's fixed-rate controller: it
offers ``--rate`` transfers per second for ``--duration`` seconds whatever the network does, so the
figures measure the nodes, not the patience of a closed loop of waiting clients.

* ``--senders`` funded accounts each own a fixed validator endpoint (sender ``s`` talks to node
  ``s mod n``, as a wallet keeps its node) and send their transfers in nonce order.
* Transfers are pre-signed (ML-DSA-44) before the clock starts, in worker processes.
* Every ``batch / rate`` seconds one JSON-RPC batch of ``--batch`` ``qnx_sendRawTransaction``
  calls goes to the next endpoint, round-robin (JSON-RPC 2.0 §6 batches, as exchanges submit).
  Sends run concurrently, so a slow answer never delays the schedule; if the generator itself
  falls behind, the offered rate printed says so.
* A tracker follows the chain on one endpoint (new heights every 20 ms, the hashes of each block's
  transactions) and stamps each transfer with the moment its block was seen: finality latency =
  seen − sent. After the load a drain of up to ``--drain`` seconds waits for the rest; whatever was
  admitted and never committed is reported as lost.

Printed: offered and finalized tx/s, finality latency p50/p99/max, blocks and transactions per
block, per-validator CPU share and peak resident memory (from /proc), the CPU spent per finalized
transfer (validators' CPU seconds from the start of the load to the end of the drain, and this
process's, over the transfers finalized), and the ceiling set by signature verification measured in
the same run (cores / (validators × verify time)).

With ``--kill-primary-after S`` the primary of the current view is killed (SIGKILL) S seconds into
the load; batches for the dead endpoint go to the next live one (submission is idempotent). Then
also printed: the stall (from the kill to the first block the survivors commit, which includes the
view-change timeout), the view installed, and the finality latency of the transfers committed before
the kill, of those in flight across it, and of those sent after the first post-crash commit.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from rich.console import Console

from crypto.keys import KeyPair
from crypto.signatures import ML_DSA_44, Context
from devnet.layout import generate
from devnet.processes import Running, start_node, stop_node
from devnet.workload import FUNDING, SUPPLY, Stats, Wallets, submit_all
from node.config import ConsensusSection
from node.rpc.client import deploy_token_call, sign_transaction, transfer_call
from state.types import Call

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def _rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory of ``pid`` in MiB (Linux /proc; ``VmHWM`` gives the peak)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def verify_cost_seconds(samples: int = 2000) -> float:
    """Measured CPU seconds per ML-DSA-44 verification of a transaction-sized message (CPU time of
    this process, so nodes still busy on the other cores do not inflate it)."""
    key = KeyPair.generate(ML_DSA_44)
    msg = os.urandom(3900)
    sig = key.sign(Context.TRANSACTION, msg)
    t0 = time.process_time()
    for _ in range(samples):
        ML_DSA_44.verify(key.public_key, Context.TRANSACTION, msg, sig)
    return (time.process_time() - t0) / samples


def _sign_range(job: tuple[int, bytes, str, bytes, bytes, int]) -> list[tuple[bytes, bytes]]:
    """Worker-process body: ``count`` transfers of 1 base unit from one sender, nonces 0..count-1.

    ``job`` = (scheme tag, private key seed, chain id, token, recipient, count); returns
    (tx hash, encoded transaction) pairs in nonce order.
    """
    tag, private, chain, token, sink, count = job
    key = KeyPair.from_private(tag, private)
    out = []
    for nonce in range(count):
        tx = sign_transaction(key, chain, nonce, [transfer_call(token, sink, 1)])
        out.append((tx.hash, tx.encode()))
    return out


def presign(senders: list[KeyPair], chain: str, token: bytes, sink: bytes, per_sender: int,
            processes: int) -> list[list[tuple[bytes, bytes]]]:
    """Sign ``per_sender`` transfers for every sender on ``processes`` cores; one list per sender."""
    jobs = [(k.scheme_tag, k.private_key, chain, token, sink, per_sender) for k in senders]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return list(pool.map(_sign_range, jobs, chunksize=max(1, len(jobs) // (4 * processes))))


def schedule(signed: list[list[tuple[bytes, bytes]]], endpoints: int,
             batch: int) -> list[tuple[int, list[tuple[bytes, bytes]]]]:
    """Cut the pre-signed transfers into (endpoint, batch) pairs in sending order.

    Sender ``s`` always uses endpoint ``s mod endpoints``. Within one endpoint, transfers go out
    round by round (every sender's nonce 0, then every sender's nonce 1, ...), so each sender's
    nonces arrive in order; batches of the endpoints are interleaved round-robin.
    """
    queues: list[list[tuple[bytes, bytes]]] = [[] for _ in range(endpoints)]
    rounds = max((len(s) for s in signed), default=0)
    for r in range(rounds):
        for s, txs in enumerate(signed):
            if r < len(txs):
                queues[s % endpoints].append(txs[r])
    cut = [[q[i:i + batch] for i in range(0, len(q), batch)] for q in queues]
    out: list[tuple[int, list[tuple[bytes, bytes]]]] = []
    for i in range(max((len(c) for c in cut), default=0)):
        for e in range(endpoints):
            if i < len(cut[e]):
                out.append((e, cut[e][i]))
    return out


RETRY_AFTER = 0.5
"""Seconds a sender waits before sending again a transfer refused with "node busy"."""


def _busy(error: dict[str, Any]) -> bool:
    data = error.get("data")
    return isinstance(data, dict) and data.get("reason") == "node busy"


@dataclass
class Ledger:
    """Per-transfer bookkeeping (perf_counter seconds): when it was sent, admitted, seen committed."""

    sent: dict[bytes, float] = field(default_factory=dict)
    admitted: set[bytes] = field(default_factory=set)
    committed: dict[bytes, float] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    position: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    """(sender index, nonce) of every transfer."""
    first_refused: dict[int, int] = field(default_factory=dict)
    """Per sender, the lowest nonce a node refused: its later transfers wait behind that gap forever."""
    resent: int = 0
    busy: int = 0
    """Answers "node busy" (load shedding) that were sent again after ``RETRY_AFTER``."""
    blocks: int = 0

    def stranded(self, h: bytes) -> bool:
        """Whether transfer ``h`` waits behind a refused nonce of its sender (not lost: the sender's
        own gap, as for any wallet that does not resend a refused transaction)."""
        sender, nonce = self.position[h]
        return nonce > self.first_refused.get(sender, nonce)

    def latencies(self) -> list[float]:
        """Finality latency of every committed transfer this run sent, seconds."""
        return [self.committed[h] - self.sent[h] for h in self.committed if h in self.sent]


async def run_bench(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmark described in the module docstring; 0 when no transfer was lost or rejected."""
    layout = generate(Path(args.home), validators=args.validators, base_rpc_port=args.base_rpc_port,
                      base_p2p_port=args.base_p2p_port,
                      consensus=ConsensusSection(compact_proposals=not args.full_proposals))
    total = int(args.rate * args.duration)
    console.print(f"bench: fresh {len(layout.nodes)}-validator devnet in {args.home}/, open loop "
                  f"{args.rate:.0f} tx/s for {args.duration:.0f} s ({total} transfers from {args.senders} senders, "
                  f"batches of {args.batch})")
    running: list[Running] = []
    wallets = Wallets([n.rpc_url for n in layout.nodes])
    try:
        for node in layout.nodes:
            running.append(await start_node(node))
        from devnet.cli import Progress, wait_ready

        await wait_ready(Progress(layout, wallets, running), timeout=90)
        chain = layout.chain_id
        minter, treasury = KeyPair.generate(), KeyPair.generate()
        senders = [KeyPair.generate() for _ in range(args.senders)]
        deploy = sign_transaction(minter, chain, 0, [deploy_token_call("Bench", "BNC", 6, minter.address)], 200_000)
        await submit_all(wallets, [deploy])
        receipt = await wallets.clients[0].call("qnx_getTransactionReceipt", "0x" + deploy.hash.hex())
        token = bytes.fromhex(receipt["output"][0][2:])
        await submit_all(wallets, [sign_transaction(minter, chain, 1, [Call(token, "mint",  # type: ignore[arg-type]
                                                                            (treasury.address, SUPPLY))])])
        funding = await submit_all(wallets, [sign_transaction(treasury, chain, i, [transfer_call(token, s.address,
                                                                                                 FUNDING)])
                                             for i, s in enumerate(senders)])
        if funding.failures:
            console.print(f"[red]funding failed: {funding.failures[:3]}")
            return 1
        per_sender = -(-total // len(senders))
        t_sign = time.perf_counter()
        signed = await trio.to_thread.run_sync(presign, senders, chain, token, KeyPair.generate().address,
                                               per_sender, os.cpu_count() or 1)
        console.print(f"pre-signed {per_sender * len(senders)} ML-DSA-44 transfers in "
                      f"{time.perf_counter() - t_sign:.1f} s")
        plan = schedule(signed, len(layout.nodes), args.batch)
        ledger = Ledger()
        for s, txs in enumerate(signed):
            for n, (h, _) in enumerate(txs):
                ledger.position[h] = (s, n)
        start_height = (await wallets.clients[0].call("qnx_status"))["height"]
        cpu0 = {r.node.name: _cpu_seconds(r.process.pid) for r in running}
        own_cpu0 = time.process_time()
        dead: set[int] = set()
        crash = _Crash()
        started = time.perf_counter()
        interval = args.batch / args.rate
        load_done = trio.Event()
        finished = 0.0
        send_slots = trio.CapacityLimiter(args.max_in_flight)
        in_flight = 0

        async def send(endpoint: int, txs: list[tuple[bytes, bytes]]) -> None:
            nonlocal in_flight
            in_flight += 1
            try:
                await _deliver(endpoint, txs)
            finally:
                in_flight -= 1

        async def _deliver(endpoint: int, txs: list[tuple[bytes, bytes]]) -> None:
            payload = [{"jsonrpc": "2.0", "id": i, "method": "qnx_sendRawTransaction", "params": ["0x" + raw.hex()]}
                       for i, (_, raw) in enumerate(txs)]
            async with send_slots:
                for _attempt in range(len(wallets.clients)):
                    if endpoint in dead:
                        endpoint = (endpoint + 1) % len(wallets.clients)
                        continue
                    now = time.perf_counter()
                    for h, _ in txs:
                        ledger.sent.setdefault(h, now)
                    try:
                        answers = await wallets.clients[endpoint].batch(payload)
                        break
                    except httpx.TransportError:
                        if endpoint not in dead:
                            raise
                        ledger.resent += len(txs)
                        endpoint = (endpoint + 1) % len(wallets.clients)
                else:
                    ledger.rejected["no live endpoint"] = ledger.rejected.get("no live endpoint", 0) + len(txs)
                    return
            retry: list[tuple[bytes, bytes]] = []
            for answer in answers:
                h = txs[answer["id"]][0]
                if "error" in answer and _busy(answer["error"]) and not load_done.is_set():
                    retry.append(txs[answer["id"]])  # a wallet told "node busy" sends it again a bit later
                    ledger.busy += 1
                elif "error" in answer:
                    error = answer["error"]
                    data = error.get("data")
                    reason = str(data.get("reason") if isinstance(data, dict) else data or error.get("message"))
                    ledger.rejected[reason] = ledger.rejected.get(reason, 0) + 1
                    sender, nonce = ledger.position[h]
                    ledger.first_refused[sender] = min(nonce, ledger.first_refused.get(sender, nonce))
                else:
                    ledger.admitted.add(h)
            if retry:
                await trio.sleep(RETRY_AFTER)
                await _deliver(endpoint, retry)

        async def pace(nursery: trio.Nursery) -> None:
            nonlocal finished
            for k, (endpoint, txs) in enumerate(plan):
                delay = started + k * interval - time.perf_counter()
                if delay > 0:
                    await trio.sleep(delay)  # relative sleep: trio's clock has its own offset
                nursery.start_soon(send, endpoint, txs)
            finished = time.perf_counter()
            load_done.set()

        async def track() -> None:
            height = start_height
            while True:
                alive = next(i for i in range(len(wallets.clients)) if i not in dead)
                client = wallets.clients[alive]
                try:
                    top = (await client.call("qnx_status"))["height"]
                    while height < top:
                        block = await client.call("qnx_getBlockByNumber", height + 1, False)
                        seen = time.perf_counter()
                        for h in block["transactions"]:
                            ledger.committed.setdefault(bytes.fromhex(h[2:]), seen)
                        height += 1
                        ledger.blocks += 1
                except httpx.TransportError:
                    pass  # that endpoint died under us: the next round picks a live one
                if load_done.is_set() and not in_flight and all(
                        h in ledger.committed or ledger.stranded(h) for h in ledger.admitted):
                    return
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pace, nursery)
            if args.kill_primary_after is not None:
                nursery.start_soon(_kill_primary, args.kill_primary_after, started, wallets, running, dead, crash)
            with trio.move_on_after(args.duration + args.drain):
                await track()
            nursery.cancel_scope.cancel()
        load_elapsed = max(finished - started, 1e-9)
        cpu_used = {r.node.name: _cpu_seconds(r.process.pid) - cpu0[r.node.name] for r in running}
        own_cpu = time.process_time() - own_cpu0
        cpu = {name: used / load_elapsed for name, used in cpu_used.items()}
        peak = {r.node.name: _rss_mib(r.process.pid, "VmHWM") for r in running}
        committed = [h for h in ledger.committed if h in ledger.sent]
        last_commit = max((ledger.committed[h] for h in committed), default=started)
        waiting = ledger.admitted - ledger.committed.keys()
        stranded = sum(1 for h in waiting if ledger.stranded(h))
        lost = len(waiting) - stranded
        stats = Stats(latencies=ledger.latencies(), started=started, finished=last_commit)
        verify = verify_cost_seconds()
        ceiling = (os.cpu_count() or 1) / (len(layout.nodes) * verify)
        console.print("\n[bold]QENEX bench[/]")
        console.print(f"  offered             {len(ledger.sent)} transfers in {load_elapsed:.1f} s = "
                      f"{len(ledger.sent) / load_elapsed:.0f} tx/s (target {args.rate:.0f})")
        console.print(f"  finalized           {len(committed)} transfers, first sent to last committed "
                      f"{stats.elapsed:.1f} s = [bold]{stats.tps:.1f} tx/s[/]")
        console.print(f"  finality latency    p50 {stats.percentile(50) * 1000:.0f} ms, "
                      f"p99 {stats.percentile(99) * 1000:.0f} ms, max {max(stats.latencies, default=0) * 1000:.0f} ms")
        console.print(f"  blocks              {ledger.blocks} ({len(committed) / max(ledger.blocks, 1):.1f} tx/block)")
        for i, name in enumerate(cpu):
            if i in dead:
                console.print(f"  {name}              killed during the run")
                continue
            console.print(f"  {name}              CPU {cpu[name] * 100:.0f}%  peak RSS {peak[name]:.0f} MiB")
        if committed:
            live = [used for i, used in enumerate(cpu_used.values()) if i not in dead]
            console.print(f"  CPU per finalized   {sum(live) / len(committed) * 1e3:.2f} ms of validator CPU in all "
                          f"({sum(live) / len(committed) / max(len(live), 1) * 1e3:.2f} ms each), "
                          f"{own_cpu / len(committed) * 1e3:.2f} ms of load generator CPU")
        console.print(f"  verify cost         {verify * 1e3:.3f} ms per ML-DSA-44 verification; ceiling "
                      f"{ceiling:.0f} tx/s ({stats.tps / ceiling * 100:.1f}% reached)")
        if crash.killed_at:
            _report_crash(console, crash, ledger)
        if ledger.busy:
            console.print(f"  shed                {ledger.busy} answers \"node busy\" (load shedding), each sent again "
                          f"{RETRY_AFTER} s later; latency counts from the first send")
        if ledger.rejected:
            console.print(f"  refused             {sum(ledger.rejected.values())}: "
                          + ", ".join(f"{n} {r}" for r, n in sorted(ledger.rejected.items(), key=lambda x: -x[1])[:4])
                          + f"; {stranded} admitted transfers wait behind a refused nonce of their sender")
        console.print(f"  lost                {lost} admitted but not committed within {args.drain:.0f} s "
                      "after the load (not counting those behind a refused nonce)")
        return 1 if lost or ledger.rejected else 0
    finally:
        with trio.CancelScope(shield=True):
            await wallets.aclose()
            for r in running:
                await stop_node(r)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``qenex-devnet bench`` (besides the devnet's own)."""
    p.add_argument("--rate", type=float, default=1500.0, help="offered load, transfers per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--senders", type=int, default=500, help="funded sending accounts")
    p.add_argument("--batch", type=int, default=50, help="transactions per JSON-RPC batch request")
    p.add_argument("--max-in-flight", type=int, default=64, help="concurrent batch requests at most")
    p.add_argument("--drain", type=float, default=30.0, help="seconds to wait for commits after the load")
    p.add_argument("--full-proposals", action="store_true",
                   help="validators send full PRE-PREPAREs ([consensus] compact_proposals = false)")
    p.add_argument("--kill-primary-after", type=float, default=None, metavar="SECONDS",
                   help="kill -9 the primary this many seconds into the load; report the stall and latencies")


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


def _report_crash(console: Console, crash: _Crash, ledger: Ledger) -> None:
    """Print the stall and the finality latency before and after the primary crash."""
    pairs = [(ledger.sent[h], ledger.committed[h] - ledger.sent[h]) for h in ledger.committed if h in ledger.sent]
    before = Stats(latencies=[lat for t, lat in pairs if t + lat < crash.killed_at])
    caught = Stats(latencies=[lat for t, lat in pairs if t < crash.killed_at <= t + lat])
    after = Stats(latencies=[lat for t, lat in pairs if crash.resumed_at and t >= crash.resumed_at])
    console.print(f"  primary crash       killed {crash.victim} (primary of view {crash.view_before}) at height "
                  f"{crash.height_at_kill}")
    if crash.resumed_at:
        console.print(f"  stall               {crash.resumed_at - crash.killed_at:.2f} s from the kill to the next "
                      f"commit (view {crash.view_after}); {ledger.resent} transfers resent to a live node")
    else:
        console.print("[red]  stall               no block committed within 120 s of the kill")
    console.print(f"  latency before      p50 {before.percentile(50) * 1000:.0f} ms, "
                  f"p99 {before.percentile(99) * 1000:.0f} ms ({len(before.latencies)} transfers)")
    console.print(f"  caught by the crash p50 {caught.percentile(50) * 1000:.0f} ms, "
                  f"max {max(caught.latencies, default=0) * 1000:.0f} ms ({len(caught.latencies)} transfers "
                  "sent before the kill, committed after it)")
    console.print(f"  latency after       p50 {after.percentile(50) * 1000:.0f} ms, "
                  f"p99 {after.percentile(99) * 1000:.0f} ms ({len(after.latencies)} transfers)")
