"""``qenex-devnet bench-vm``: token transfers/s and AMM swaps/s executed by one process on the real store.

No consensus and no signature checks (a node verifies signatures at admission, before execution):
blocks of pre-signed transactions run through ``VM.execute_block`` against the state of a
``state.chain.ChainStore`` on LevelDB in a temporary directory, then each block is committed the
way a node commits it: the state root (``state.prepare``), the header, and ``ChainStore.commit``
(one synced LevelDB batch holding the state nodes, block, receipts and tx index). Transactions are
decoded objects whose hash and signing bytes the node computed at admission.

Setup (untimed): two tokens, every account funded with both and with the router approved, the
canonical AMM factory and router, one pool of the two tokens with deep liquidity. Then
``--transfers`` token transfers between random accounts and ``--swaps`` router swaps
(``swapExactTokensForTokens``, alternating direction), in blocks of ``--block-txs``.

Printed per phase (``transfers/s``, ``swaps/s``):

* the goal figure: execution alone, ``VM.execute_block`` against the LevelDB state store, of
  transactions whose signatures were already checked, with no consensus, in one process. This is
  what the issue's goals (20,000 transfers/s and 5,000 swaps/s on one core) are measured against;
* the same blocks with state root and commit (what a node does after execution);
* the VM alone, the same transactions executed against a dict copy of the state;
* the gas used per operation, intrinsic and execution; with ``--profile`` the VM's hottest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from contracts import gas as G
from contracts.amm import CANONICAL_FACTORY, CANONICAL_ROUTER, pair_address
from contracts.builtin import UINT256_MAX
from contracts.registry import default_vm
from contracts.vm import VM, BlockEnv, contract_address
from crypto.keys import KeyPair
from crypto.signatures import ED25519, ML_DSA_44
from node.node import receipts_root, tx_root
from node.rpc.client import approve_call, deploy_amm_calls, deploy_token_call, sign_transaction, transfer_call
from node.setup import NodeKeys, validator_entry
from state.chain import ChainStore
from state.kv import LevelDBStore
from state.types import STATUS_SUCCESS, Block, BlockHeader, Call, CommitCertificate, Genesis, Receipt, Transaction

CHAIN_ID = "qenex-bench-vm"
GOAL_TRANSFERS = 20_000
GOAL_SWAPS = 5_000
SCHEMES = {"ed25519": ED25519, "ml-dsa-44": ML_DSA_44}


@dataclass
class Phase:
    """Timings (seconds) and receipts of one measured phase."""

    name: str
    execute: list[float] = field(default_factory=list)
    root: list[float] = field(default_factory=list)
    commit: list[float] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    intrinsic: list[int] = field(default_factory=list)
    in_memory: list[float] = field(default_factory=list)
    """Execution of the same blocks against a dict copy of the state (the VM without the store)."""

    @property
    def txs(self) -> int:
        """Transactions executed."""
        return len(self.receipts)

    @property
    def exec_rate(self) -> float:
        """Transactions per second of execution alone."""
        return self.txs / max(sum(self.execute), 1e-9)

    @property
    def memory_rate(self) -> float:
        """Transactions per second of execution against the dict copy."""
        return self.txs / max(sum(self.in_memory), 1e-9)

    @property
    def total_rate(self) -> float:
        """Transactions per second of execution, state root and commit."""
        return self.txs / max(sum(self.execute) + sum(self.root) + sum(self.commit), 1e-9)


class Bench:
    """A chain store on LevelDB, the VM, and the blocks committed on it."""

    def __init__(self, directory: Path, accounts: int, scheme: str, seed: int) -> None:
        self.store = LevelDBStore(directory / "chain")
        self.rng = random.Random(seed)
        validator = validator_entry("bench", NodeKeys(KeyPair.generate(), KeyPair.generate(ED25519)))
        self.genesis = Genesis(CHAIN_ID, 1_700_000_000_000, (validator,))
        self.chain = ChainStore(self.store, self.genesis)
        self.vm: VM = default_vm()
        scheme_obj = SCHEMES[scheme]
        self.operator = KeyPair.generate(scheme_obj)
        self.keys = [KeyPair.generate(scheme_obj) for _ in range(accounts)]
        self.nonces: dict[bytes, int] = {}
        self.mirror: dict[bytes, bytes] = {}
        """The committed state as a plain dict (every block's writes applied)."""

    def sign(self, key: KeyPair, calls: Sequence[Call], gas_limit: int = 400_000) -> Transaction:
        """A signed transaction of ``key`` with its next nonce; hash and signing bytes computed (as at admission)."""
        nonce = self.nonces.get(key.address, 0)
        self.nonces[key.address] = nonce + 1
        tx = sign_transaction(key, CHAIN_ID, nonce, list(calls), gas_limit)
        _ = tx.hash, tx.signing_bytes
        return tx

    def block(self, txs: Sequence[Transaction], phase: Phase | None = None,
              execute: Callable[[], tuple[dict[bytes, bytes | None], list[Receipt]]] | None = None) -> list[Receipt]:
        """Execute ``txs`` as the next block and commit it; timings go to ``phase``."""
        head = self.chain.head
        timestamp_ms = head.timestamp_ms + 1000
        env = BlockEnv(CHAIN_ID, head.height + 1, timestamp_ms // 1000)
        t0 = time.perf_counter()
        if execute is None:
            writes, receipts = self.vm.execute_block(self.chain.state.get, env, txs)
        else:
            writes, receipts = execute()
        t1 = time.perf_counter()
        state_root, _ = self.chain.state.prepare(writes, head.height + 1)
        header = BlockHeader(CHAIN_ID, head.height + 1, 0, head.block_hash, timestamp_ms, 0, tx_root(txs), state_root,
                             receipts_root(receipts), sum(r.gas_used for r in receipts))
        block = Block(header, tuple(txs))
        t2 = time.perf_counter()
        self.chain.commit(block, CommitCertificate(header.height, 0, block.hash, ()), receipts, writes)
        t3 = time.perf_counter()
        for key, value in writes.items():
            if value is None:
                self.mirror.pop(key, None)
            else:
                self.mirror[key] = value
        if phase is not None:
            phase.execute.append(t1 - t0)
            phase.root.append(t2 - t1)
            phase.commit.append(t3 - t2)
            phase.receipts.extend(receipts)
            phase.intrinsic.extend(G.intrinsic_gas(len(tx.signing_bytes)) for tx in txs)
        failed = [r.revert_reason for r in receipts if r.status != STATUS_SUCCESS]
        if failed:
            raise RuntimeError(f"{len(failed)} transactions reverted, e.g. {failed[:3]}")
        return receipts

    def setup(self) -> tuple[bytes, bytes]:
        """Tokens, funding, approvals, the AMM and its pool; returns the two token addresses."""
        op = self.operator.address
        deploy = self.sign(self.operator, [deploy_token_call("Bench A", "BNA", 18, op),
                                           deploy_token_call("Bench B", "BNB", 18, op), *deploy_amm_calls()],
                           gas_limit=1_000_000)
        token_a, token_b = contract_address(op, 0, 0), contract_address(op, 0, 1)
        self.block([deploy])
        funding = 10**30
        txs = []
        for i in range(0, len(self.keys), 200):
            calls = [Call(t, "mint", (k.address, funding)) for k in self.keys[i:i + 200] for t in (token_a, token_b)]
            txs.append(self.sign(self.operator, calls, gas_limit=40_000_000))
        depth = 10**27
        txs.append(self.sign(self.operator, [
            Call(token_a, "mint", (op, depth)), Call(token_b, "mint", (op, depth)),
            approve_call(token_a, CANONICAL_ROUTER), approve_call(token_b, CANONICAL_ROUTER),
            Call(CANONICAL_ROUTER, "addLiquidity", (token_a, token_b, depth, depth, 0, 0, op, 2**40))],
            gas_limit=1_000_000))
        self.block(txs)
        for i in range(0, len(self.keys), 2000):
            self.block([self.sign(k, [approve_call(token_a, CANONICAL_ROUTER, UINT256_MAX),
                                      approve_call(token_b, CANONICAL_ROUTER, UINT256_MAX)])
                        for k in self.keys[i:i + 2000]])
        return token_a, token_b

    def run(self, phase: Phase, txs: list[Transaction], block_txs: int, profile: cProfile.Profile | None) -> None:
        """Execute ``txs`` in blocks of ``block_txs`` on a dict copy of the state, then on the store, committing."""
        state = dict(self.mirror)
        head = self.chain.head
        for n, i in enumerate(range(0, len(txs), block_txs), 1):
            env = BlockEnv(CHAIN_ID, head.height + n, (head.timestamp_ms + 1000 * n) // 1000)
            t0 = time.perf_counter()
            writes, _ = self.vm.execute_block(state.get, env, txs[i:i + block_txs])
            phase.in_memory.append(time.perf_counter() - t0)
            for key, value in writes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
        for i in range(0, len(txs), block_txs):
            chunk = txs[i:i + block_txs]
            if profile is None:
                self.block(chunk, phase)
                continue
            head = self.chain.head
            env = BlockEnv(CHAIN_ID, head.height + 1, (head.timestamp_ms + 1000) // 1000)

            def execute(chunk: list[Transaction] = chunk, env: BlockEnv = env) -> tuple[
                    dict[bytes, bytes | None], list[Receipt]]:
                profile.enable()
                try:
                    return self.vm.execute_block(self.chain.state.get, env, chunk)
                finally:
                    profile.disable()

            self.block(chunk, phase, execute)


def _gas_line(phase: Phase) -> str:
    used = [r.gas_used for r in phase.receipts]
    intrinsic = statistics.mean(phase.intrinsic)
    mean = statistics.mean(used)
    return (f"gas per operation {mean:,.0f} (intrinsic {intrinsic:,.0f} + execution {mean - intrinsic:,.0f}; "
            f"min {min(used):,}, max {max(used):,})")


def _median_rate(seconds: list[float], block_txs: int) -> float:
    """Transactions per second of the median block (full blocks only, if any)."""
    return block_txs / statistics.median(seconds) if seconds else 0.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``qenex-devnet bench-vm``."""
    p.add_argument("--accounts", type=int, default=2000, help="funded accounts sending transactions")
    p.add_argument("--transfers", type=int, default=40_000, help="token transfers to execute")
    p.add_argument("--swaps", type=int, default=10_000, help="router swaps to execute")
    p.add_argument("--block-txs", type=int, default=2000, help="transactions per block")
    p.add_argument("--scheme", choices=sorted(SCHEMES), default="ed25519",
                   help="account key scheme (size of the transactions; signatures are not checked)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="print the VM's hottest functions")
    p.add_argument("--dir", default=None, help="parent of the temporary LevelDB directory")


def run_bench_vm(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmark of the module docstring; 0 when every transaction succeeded."""
    directory = Path(tempfile.mkdtemp(prefix="qenex-bench-vm-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        bench = Bench(directory, args.accounts, args.scheme, args.seed)
        token_a, token_b = bench.setup()
        rng, keys = bench.rng, bench.keys
        transfers = []
        for i in range(args.transfers):
            sender = keys[i % len(keys)]
            to = keys[rng.randrange(len(keys))].address
            transfers.append(bench.sign(sender, [transfer_call(rng.choice((token_a, token_b)), to,
                                                              rng.randrange(1, 10**18))], gas_limit=100_000))
        swaps = []
        for i in range(args.swaps):
            sender = keys[i % len(keys)]
            path = (token_a, token_b) if (i // len(keys)) % 2 == 0 else (token_b, token_a)
            swaps.append(bench.sign(sender, [Call(CANONICAL_ROUTER, "swapExactTokensForTokens",
                                                  (rng.randrange(10**15, 10**18), 0, path, sender.address, 2**40))]))
        console.print(f"bench-vm: LevelDB in {directory}, {args.accounts} {args.scheme} accounts, setup and "
                      f"{len(transfers) + len(swaps)} signed transactions in {time.perf_counter() - t0:.1f} s; "
                      f"blocks of {args.block_txs} transactions, one process, no consensus, signatures pre-checked")
        profile = cProfile.Profile() if args.profile else None
        phases = [Phase("transfers"), Phase("swaps")]
        bench.run(phases[0], transfers, args.block_txs, profile)
        bench.run(phases[1], swaps, args.block_txs, profile)
        pool = pair_address(CANONICAL_FACTORY, token_a, token_b)
        reserves = bench.vm.call_readonly(bench.chain.state.get, BlockEnv(CHAIN_ID, 0, 0), bench.operator.address,
                                          pool, "getReserves", ())
        console.print("\n[bold]QENEX bench-vm[/]: the goal figure is execution alone against the LevelDB state "
                      "store (signatures already checked, no consensus, one process)")
        for phase, goal in zip(phases, (GOAL_TRANSFERS, GOAL_SWAPS), strict=True):
            if not phase.txs:
                continue
            unit = f"{phase.name}/s"
            verdict = "[green]meets[/]" if phase.exec_rate >= goal else "[red]below[/]"
            console.print(f"  {phase.name}: {phase.txs} in {len(phase.execute)} blocks of {args.block_txs}")
            console.print(f"    goal figure, execution on the state store  [bold]{phase.exec_rate:>9,.0f} {unit}[/] "
                          f"(median block {_median_rate(phase.execute, args.block_txs):,.0f}); {verdict} the goal "
                          f"of {goal:,} {unit}")
            console.print(f"    with state root and commit                 {phase.total_rate:>9,.0f} {unit} (root "
                          f"{sum(phase.root):.2f} s, commit {sum(phase.commit):.2f} s)")
            console.print(f"    the VM alone on a dict copy of the state   {phase.memory_rate:>9,.0f} {unit} (median "
                          f"block {_median_rate(phase.in_memory, args.block_txs):,.0f})")
            console.print(f"    {_gas_line(phase)}")
        console.print(f"  pool reserves after the swaps: {reserves[0]} / {reserves[1]}; state root "
                      f"0x{bench.chain.head.state_root.hex()[:16]}… at height {bench.chain.head.height}")
        if profile is not None:
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(18)
            console.print(out.getvalue())
        bench.store.close()
        return 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
