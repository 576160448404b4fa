"""Fault injection with real processes and sockets: kill -9 the primary under load, then the next
primary; tear a backup's log and restart it; cut validators off through TCP proxies and heal them.

Invariants: every transaction whose commit was reported to a client is in the final chain of every
node; all nodes end at one height with one state root; the network keeps committing while one of
the four validators is down (f = 1). Processes are stopped by their pids.

Figures for the report (printed, never asserted; ``pytest -s`` shows them): finality latency
(submission to reported commit) before and after a primary crash, and the view-change time (kill to
the first block a survivor commits in a later view).
"""

from __future__ import annotations

import collections
import functools
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from crypto.keys import KeyPair
from devnet.cli import Progress, wait_ready
from devnet.layout import Layout, generate
from devnet.processes import Running, start_node, stop_node
from devnet.workload import Wallets, submit_all, summarize_latency
from node.config import ConsensusSection
from node.genesis import load_genesis
from node.rpc.client import AsyncClient, deploy_token_call, sign_transaction, transfer_call
from node.rpc.errors import RPCError
from state.chain import ChainStore
from state.kv import LevelDBStore
from state.types import Call, Transaction
from tests.conftest import STARTING, height_at_least, poll_until
from tests.test_devnet import free_block

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Reported:
    """A transaction whose commit a node reported to the client: ``sent`` and ``reported`` are
    ``time.perf_counter()`` seconds; ``height`` and ``block_hash`` (0x-hex) come from the receipt."""

    tx_hash: bytes
    sent: float
    reported: float
    height: int
    block_hash: str

    @property
    def latency(self) -> float:
        """Finality latency in seconds: submission to reported commit."""
        return self.reported - self.sent


@dataclass
class Load:
    """What a closed-loop load saw: each commit reported to a client, and each failure."""

    reported: list[Reported] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _waiters: list[tuple[int, trio.Event]] = field(default_factory=list)

    def record(self, r: Reported) -> None:
        """Add one reported commit and wake whoever waits for this many."""
        self.reported.append(r)
        for count, event in self._waiters:
            if len(self.reported) >= count:
                event.set()

    async def wait_reported(self, count: int, *, what: str, timeout: float = 60.0) -> None:
        """Wait until ``count`` commits have been reported; fail the test naming ``what`` after
        ``timeout`` seconds."""
        event = trio.Event()
        self._waiters.append((count, event))
        if len(self.reported) >= count:
            event.set()
        with trio.move_on_after(timeout):
            await event.wait()
        if not event.is_set():
            pytest.fail(f"timed out after {timeout} s waiting until {what} "
                        f"({len(self.reported)} reported; failures: {self.failures[:3]})")


async def commit(client: AsyncClient, tx: Transaction, load: Load) -> dict[str, Any] | None:
    """Send ``tx`` through ``client`` and wait for its receipt (resending the same bytes, which is
    idempotent, when the connection drops); record the reported commit in ``load``. A node's error
    answer is recorded as a failure and gives None."""
    sent = time.perf_counter()
    for attempt in range(1, 6):
        try:
            receipt: dict[str, Any] = await client.send_transaction(tx, wait=True, timeout=60.0)
        except httpx.TransportError as err:
            if attempt == 5:
                load.failures.append(f"0x{tx.hash.hex()[:16]} via {client.url}: {err!r}")
                return None
            await trio.sleep(0.05 * attempt)
            continue
        except RPCError as err:
            load.failures.append(f"0x{tx.hash.hex()[:16]} via {client.url}: {err}")
            return None
        if receipt["status"] != "success":
            load.failures.append(f"0x{tx.hash.hex()[:16]} reverted: {receipt['revertReason']}")
        load.record(Reported(tx.hash, sent, time.perf_counter(), receipt["blockHeight"], receipt["blockHash"]))
        return receipt
    return None


async def transfer_loop(client: AsyncClient, sender: KeyPair, nonces: dict[bytes, int], chain: str,
                        token: bytes, to: bytes, load: Load, stop: trio.Event, *, limit: int = 200) -> None:
    """Closed loop: ``sender`` transfers 1 unit of ``token`` to ``to`` through ``client``, waits for the
    reported commit, and sends the next, until ``stop`` is set (at most ``limit`` transfers)."""
    for _ in range(limit):
        if stop.is_set():
            return
        tx = sign_transaction(sender, chain, nonces[sender.address], [transfer_call(token, to, 1)])
        if await commit(client, tx, load) is None:
            return  # later nonces of this sender can not commit either
        nonces[sender.address] += 1


async def statuses(clients: list[AsyncClient]) -> list[dict[str, Any]]:
    """``qnx_status`` of every client, read concurrently (one snapshot as near in time as it gets)."""
    out: list[dict[str, Any]] = [{} for _ in clients]

    async def one(k: int) -> None:
        out[k] = await clients[k].call("qnx_status")

    async with trio.open_nursery() as nursery:
        for k in range(len(clients)):
            nursery.start_soon(one, k)
    return out


async def current_view(clients: list[AsyncClient]) -> int:
    """The view most of the nodes behind ``clients`` are in."""
    views = collections.Counter(s["view"] for s in await statuses(clients))
    return int(views.most_common(1)[0][0])


async def votes_sent(rpc_url: str) -> float:
    """PREPARE and COMMIT messages a node has sent (its ``qenex_p2p_messages_sent_total{type="vote"}``)."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(rpc_url.rstrip("/") + "/metrics")).text
    for line in text.splitlines():
        if line.startswith('qenex_p2p_messages_sent_total{type="vote"}'):
            return float(line.split()[-1])
    raise AssertionError("no vote counter in /metrics")


async def converge(wallets: Wallets, target: int, *, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until every node reports one head (height, block hash, state root) at height >= ``target``;
    check each node serves that block with that state root; return the common status."""
    common: list[dict[str, Any]] = []

    async def same_head() -> bool:
        seen = await statuses(wallets.clients)
        heads = {(s["height"], s["blockHash"], s["stateRoot"]) for s in seen}
        if len(heads) == 1 and seen[0]["height"] >= target:
            common[:] = [seen[0]]
            return True
        return False

    await poll_until(same_head, what=f"all nodes end at one height >= {target} with one state root",
                     timeout=timeout, tolerate=STARTING)
    head = common[0]
    for client in wallets.clients:
        block = await client.call("qnx_getBlockByNumber", head["height"], False)
        assert (block["hash"], block["header"]["stateRoot"]) == (head["blockHash"], head["stateRoot"])
    return head


async def assert_in_every_chain(wallets: Wallets, reported: list[Reported]) -> None:
    """Every reported commit is in every node's chain: the block at its reported height has its
    reported hash on every node and lists the transaction."""
    assert reported
    heights = sorted({r.height for r in reported})
    for client in wallets.clients:
        blocks = {h: await client.call("qnx_getBlockByNumber", h, False) for h in heights}
        for r in reported:
            block = blocks[r.height]
            assert block is not None, f"{client.url} lacks height {r.height}"
            assert block["hash"] == r.block_hash, f"{client.url} has another block at {r.height}"
            assert "0x" + r.tx_hash.hex() in block["transactions"], f"{client.url} lost 0x{r.tx_hash.hex()}"


async def first_commit_in_later_view(client: AsyncClient, above: int, view: int) -> tuple[float, int, int]:
    """Poll ``client`` until it has committed a block above height ``above`` whose commit certificate
    is from a view later than ``view``; returns (``time.perf_counter()`` when seen, its height, its view)."""
    found: list[tuple[float, int, int]] = []
    checked = above

    async def check() -> bool:
        nonlocal checked
        status = await client.call("qnx_status")
        seen_at = time.perf_counter()
        while checked < status["height"]:
            checked += 1
            block = await client.call("qnx_getBlockByNumber", checked, False)
            cert = block["commitCertificate"]
            committed_in = cert["view"] if cert is not None else block["header"]["view"]
            if committed_in > view:
                found.append((seen_at, checked, committed_in))
                return True
        return False

    await poll_until(check, what=f"{client.url} commits a block in a view after {view}", interval=0.05)
    return found[0]


def latencies(reported: list[Reported]) -> str:
    """``summarize_latency`` of ``reported`` with the sample count."""
    return f"{summarize_latency([r.latency for r in reported])} (n={len(reported)})"


async def kill_primary_under_load(layout: Layout, running: list[Running], users: list[KeyPair],
                                  nonces: dict[bytes, int], token: bytes, to: bytes, load: Load) -> int:
    """kill -9 the primary of the current view while ``users`` run closed-loop transfers through the
    other three nodes; check the survivors change view and keep committing; print the view-change time
    and the finality latency before and after the kill. Returns the killed validator's index (still
    down)."""
    n = len(layout.nodes)
    everyone = Wallets([node.rpc_url for node in layout.nodes])
    try:
        view = await current_view(everyone.clients)
    finally:
        await everyone.aclose()
    victim = view % n
    survivors = Wallets([layout.nodes[i].rpc_url for i in range(n) if i != victim])
    start = len(load.reported)
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            for k, user in enumerate(users):
                nursery.start_soon(transfer_loop, survivors.clients[k % len(survivors.clients)], user, nonces,
                                   layout.chain_id, token, to, load, stop)
            await load.wait_reported(start + 2 * len(users), what="the load commits before the kill")
            down_from = (await survivors.clients[0].call("qnx_status"))["height"]
            running[victim].process.kill()  # kill -9 the primary with transfers in flight
            killed_at = time.perf_counter()
            await running[victim].process.wait()
            running[victim].log.close()
            in_flight = len(load.reported)
            seen_at, new_height, new_view = await first_commit_in_later_view(survivors.clients[0], down_from, view)
            changed = len(load.reported)
            await load.wait_reported(changed + 3 * len(users), what="the load commits in the new view")
            stop.set()
        assert not load.failures, load.failures
        phase = load.reported[start:]
        before = [r for r in phase if r.reported < killed_at]
        after = [r for r in phase if r.sent > seen_at]
        across = [r for r in phase if r.sent < killed_at < r.reported]
        heights = [s["height"] for s in await statuses(survivors.clients)]
        # f = 1 node down: the other three went on committing, in the new view, the load's transfers too
        assert new_height > down_from and min(heights) > new_height and len(after) >= len(users), \
            (down_from, new_height, heights, len(after))
        print(f"\nkilled primary node-{victim} of view {view} under a closed loop of {len(users)} senders "
              f"({in_flight - start} committed before): view change {seen_at - killed_at:.2f} s "
              f"(kill -> first block committed in view {new_view}, height {new_height}); "
              f"height {down_from} -> {min(heights)} while it was down; {changed - in_flight} reported meanwhile\n"
              f"  finality before the kill: {latencies(before)}\n"
              f"  finality of transfers in flight across the kill: {latencies(across)}\n"
              f"  finality after the view change (3 of 4 up): {latencies(after)}")
    finally:
        with trio.CancelScope(shield=True):
            await survivors.aclose()
    return victim


async def test_kill_primary_then_the_next_primary(tmp_path: Path) -> None:
    """kill -9 the primary while transfers are in flight; the other three change view and go on
    committing; restart it (it catches up); then kill the primary of the new view likewise and restart
    it. Every reported commit is in every node's final chain, and all end at one head."""
    base = free_block(8)
    layout = generate(tmp_path / "net", base_rpc_port=base, base_p2p_port=base + 4, scrypt_n=2**10,
                      consensus=ConsensusSection(view_timeout_ms=1500, status_interval_ms=300,
                                                 retransmit_ms=500))
    running: list[Running] = []
    wallets = Wallets([n.rpc_url for n in layout.nodes])
    try:
        for node in layout.nodes:
            running.append(await start_node(node))
        await wait_ready(Progress(layout, wallets, running), timeout=60)
        chain = layout.chain_id
        owner = KeyPair.generate()
        users = [KeyPair.generate() for _ in range(8)]
        load = Load()
        deploy = sign_transaction(owner, chain, 0, [deploy_token_call("F", "F", 0, owner.address)], 200_000)
        receipt = await commit(wallets.clients[0], deploy, load)
        assert receipt is not None, load.failures
        token = bytes.fromhex(receipt["output"][0][2:])
        mint = sign_transaction(owner, chain, 1, [Call(token, "mint", (owner.address, 10**9))])  # type: ignore[arg-type]
        funding = [mint] + [sign_transaction(owner, chain, 2 + i, [transfer_call(token, u.address, 10**6)])
                            for i, u in enumerate(users)]
        first = await submit_all(wallets, funding)
        assert not first.failures, first.failures
        nonces: dict[bytes, int] = {u.address: 0 for u in users}

        for _ in range(2):  # the primary, then the primary of the view the network settled in
            victim = await kill_primary_under_load(layout, running, users, nonces, token, owner.address, load)
            top = max(r.height for r in load.reported)
            running[victim] = await start_node(layout.nodes[victim])  # catches up from certified blocks
            await poll_until(functools.partial(height_at_least, wallets.clients[victim], top),
                             what=f"node-{victim} catches up to {top}", tolerate=STARTING)
            # restarted, it takes part again (a new process: its vote counter starts at 0): it learns
            # the view the others installed while it was down, and votes
            url = layout.nodes[victim].rpc_url

            async def voting(url: str = url) -> bool:
                return await votes_sent(url) > 0

            await poll_until(voting, what=f"restarted node-{victim} votes again")

        head = await converge(wallets, max(r.height for r in load.reported))
        await assert_in_every_chain(wallets, load.reported)
        for tx in funding:
            r = await wallets.clients[1].call("qnx_getTransactionReceipt", "0x" + tx.hash.hex())
            assert r is not None and r["status"] == "success"
            for client in wallets.clients:
                block = await client.call("qnx_getBlockByNumber", r["blockHeight"], False)
                assert block["hash"] == r["blockHash"]
        print(f"final head: height {head['height']}, view {head['view']}, {len(load.reported)} reported commits "
              f"in every node's chain")
    finally:
        with trio.CancelScope(shield=True):
            await wallets.aclose()
            for r in running:
                await stop_node(r)


def stored_chain(data: Path, home: Path) -> dict[int, bytes]:
    """Block hash by height (1..head) of the chain in the LevelDB at ``data``, opened with
    ``ChainStore`` (which checks that head, blocks and state agree, as the node does on start) for the
    genesis in ``home``; the store is closed again."""
    store = LevelDBStore(data, create=False)
    try:
        chain = ChainStore(store, load_genesis(home / "genesis.json"))
        hashes: dict[int, bytes] = {}
        for h in range(1, chain.head.height + 1):
            block = chain.block(h)
            assert block is not None, f"block {h} below the head {chain.head.height} is missing"
            hashes[h] = block.hash
        assert not hashes or hashes[chain.head.height] == chain.head.block_hash
        return hashes
    finally:
        store.close()


async def test_kill_backup_tear_its_log_and_restart(tmp_path: Path) -> None:
    """kill -9 a backup while blocks commit, cut its LevelDB log inside the commit of a block it had
    reported, restart it: it opens one block lower, at a block boundary of the same chain, and
    catches up to the others' chain."""
    base = free_block(8)
    layout = generate(tmp_path / "net", base_rpc_port=base, base_p2p_port=base + 4, scrypt_n=2**10,
                      consensus=ConsensusSection(view_timeout_ms=1500, status_interval_ms=300,
                                                 empty_block_interval_ms=100))
    running: list[Running] = []
    wallets = Wallets([n.rpc_url for n in layout.nodes])
    try:
        for node in layout.nodes:
            running.append(await start_node(node))
        await wait_ready(Progress(layout, wallets, running), timeout=60)
        await poll_until(lambda: height_at_least(wallets.clients[2], 15), what="15 empty blocks pile up",
                         timeout=30)
        reported = (await wallets.clients[2].call("qnx_status"))["height"]
        running[2].process.kill()
        await running[2].process.wait()
        running[2].log.close()
        down_from = (await wallets.clients[0].call("qnx_status"))["height"]
        # f = 1 node down: the other three go on committing (empty blocks every 100 ms)
        await poll_until(functools.partial(height_at_least, wallets.clients[0], down_from + 5),
                         what=f"the other three commit past {down_from + 5} while node-2 is down", timeout=30)
        home = Path(layout.nodes[2].home)
        data = home / "data"
        # what node-2 had on disk when killed (a copy: opening a LevelDB rewrites its log)
        shutil.copytree(data, tmp_path / "before-tear")
        before = stored_chain(tmp_path / "before-tear", home)
        assert max(before) >= reported, "a height the node reported is durable"
        # tear the log inside the write batch that committed block `reported` (its b"h/" index key)
        log = max(data.glob("*.log"), key=lambda p: p.stat().st_mtime_ns)
        raw = log.read_bytes()
        cut = raw.find(b"h/" + before[reported])
        assert cut > 0, f"the commit of block {reported} is in the newest log {log.name}"
        with open(log, "r+b") as f:
            f.truncate(cut)
        assert log.stat().st_size == cut < len(raw)
        torn = stored_chain(data, home)
        assert max(torn) == reported - 1, f"head {max(torn)} after tearing the commit of {reported}"
        assert all(torn[h] == before[h] for h in torn), "the torn store is a prefix of the same chain"
        running[2] = await start_node(layout.nodes[2])
        heights: list[int] = []

        async def caught_up() -> bool:
            heights[:] = [(await wallets.clients[k].call("qnx_status"))["height"] for k in (2, 0)]
            mine, theirs = heights
            return bool(mine >= max(20, max(before)) and mine >= theirs - 1)

        await poll_until(caught_up, what="node-2 reopens and catches up", tolerate=STARTING)
        h = min(heights)
        blocks = {(await c.call("qnx_getBlockByNumber", h, False))["header"]["stateRoot"] for c in wallets.clients}
        assert len(blocks) == 1
        head = await converge(wallets, max(heights))  # one head on all four, empty blocks still coming
        print(f"\ntorn log: node-2 reported {reported}, had {max(before)} on disk; log cut from {len(raw)} to "
              f"{cut} bytes, reopened at {max(torn)}, caught up; all four at height {head['height']}, "
              f"root {head['stateRoot'][:18]}")
    finally:
        with trio.CancelScope(shield=True):
            await wallets.aclose()
            for r in running:
                await stop_node(r)


async def test_cut_off_a_backup_and_the_primary_then_heal(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Every P2P link runs through a FaultProxy. Cutting a backup off leaves 3 of 4 committing; after
    healing it catches up. Cutting the primary off forces a view change among the other three;
    after healing the old primary follows the new view and the chain stays one chain."""
    from devnet.faults import FaultProxy

    base = free_block(8)
    proxies: dict[tuple[int, int], FaultProxy] = {}
    for i in range(4):
        for j in range(4):
            if i != j:
                proxies[(i, j)] = FaultProxy(base + 4 + j)
                await nursery.start(proxies[(i, j)].run)
    layout = generate(tmp_path / "net", base_rpc_port=base, base_p2p_port=base + 4, scrypt_n=2**10,
                      consensus=ConsensusSection(view_timeout_ms=1500, status_interval_ms=300, retransmit_ms=500),
                      peer_endpoint=lambda i, j: ("127.0.0.1", proxies[(i, j)].port))

    def links(k: int) -> list[FaultProxy]:
        return [p for (i, j), p in proxies.items() if k in (i, j)]

    running: list[Running] = []
    wallets = Wallets([n.rpc_url for n in layout.nodes])

    async def height(k: int) -> int:
        return int((await wallets.clients[k].call("qnx_status"))["height"])

    async def wait_height(k: int, target: int) -> None:
        await poll_until(lambda: height_at_least(wallets.clients[k], target), what=f"node-{k} reaches {target}")

    try:
        for node in layout.nodes:
            running.append(await start_node(node))
        await wait_ready(Progress(layout, wallets, running), timeout=60)
        chain = layout.chain_id
        owner = KeyPair.generate()
        deploys = [sign_transaction(owner, chain, n, [deploy_token_call("P", "P", 0, owner.address)], 200_000)
                   for n in range(7)]
        load = Load()

        async def commit_in_order(through: Wallets, txs: list[Transaction]) -> None:
            for k, tx in enumerate(txs):
                if await commit(through.clients[k % len(through.clients)], tx, load) is None:
                    return
        await commit_in_order(wallets, deploys[:1])

        primary = await current_view(wallets.clients) % 4
        backup = (primary + 3) % 4
        for p in links(backup):
            p.cut()
        cut_at = await height(backup)
        majority = Wallets([layout.nodes[i].rpc_url for i in range(4) if i != backup])
        await commit_in_order(majority, deploys[1:4])
        await majority.aclose()
        assert not load.failures, load.failures
        top = await height(primary)
        # f = 1 node cut off: the other three go on committing without it
        assert top > cut_at and await height(backup) <= cut_at + 1, "the cut-off backup must fall behind"
        for p in links(backup):
            p.heal()
        await wait_height(backup, top)
        # healed, it takes part again: it votes on the next blocks (not only catches them up)
        voted = await votes_sent(layout.nodes[backup].rpc_url)
        await wait_height(backup, top + 3)
        assert await votes_sent(layout.nodes[backup].rpc_url) > voted, f"healed node-{backup} votes again"

        view = await current_view(wallets.clients)
        victim = view % 4
        for p in links(victim):
            p.cut()
        cut_off_at = time.perf_counter()
        rest = Wallets([layout.nodes[i].rpc_url for i in range(4) if i != victim])
        try:
            down_from = (await rest.clients[0].call("qnx_status"))["height"]
            async with trio.open_nursery() as inner:
                inner.start_soon(commit_in_order, rest, deploys[4:])
                seen_at, new_height, new_view = await first_commit_in_later_view(rest.clients[0], down_from, view)
            status = await rest.clients[0].call("qnx_status")
        finally:
            await rest.aclose()
        assert not load.failures, load.failures
        # the other three changed view and went on committing while the primary was cut off
        assert new_view > view and status["view"] > view and status["height"] > down_from
        print(f"\ncut off primary node-{victim} of view {view}: view change {seen_at - cut_off_at:.2f} s "
              f"(cut -> first block committed in view {new_view}, height {new_height}); "
              f"height {down_from} -> {status['height']} while it was cut off")
        for p in links(victim):
            p.heal()
        await wait_height(victim, status["height"])
        h = status["height"]
        seen = {(await c.call("qnx_getBlockByNumber", h, False))["hash"] for c in wallets.clients}
        assert len(seen) == 1

        # the healed old primary takes part in the new view (it installs it from the NEW-VIEW)
        async def in_new_view() -> bool:
            return bool((await wallets.clients[victim].call("qnx_status"))["view"] >= status["view"])

        await poll_until(in_new_view, what=f"node-{victim} installs view {status['view']}", timeout=30)
        await wait_height(victim, h + 3)
        head = await converge(wallets, h + 3)
        await assert_in_every_chain(wallets, load.reported)
        assert len(load.reported) == len(deploys)
        print(f"healed: all four at height {head['height']}, view {head['view']}; {len(load.reported)} "
              f"reported commits in every node's chain")
    finally:
        with trio.CancelScope(shield=True):
            await wallets.aclose()
            for r in running:
                await stop_node(r)
