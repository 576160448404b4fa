"""``qenex-devnet bench-state``: the cost of the authenticated state (``state.jmt``) on real LevelDB.

For each tree size N (default 10^4, 10^5, 10^6 keys) in a fresh LevelDB directory under a temporary
directory: fill the tree with N keys (unsynced batches of ``--fill-batch`` keys per version), then
commit ``--blocks`` blocks of ``--touched`` keys each, as the chain store does: ``prepare`` (hash the
dirty paths, build the write batch), one synced LevelDB write, ``applied``; the sizes take turns,
block by block, so that a change in the machine's speed weighs on all of them alike. A block updates
existing keys and inserts new ones (``--new-fraction``); keys and values are seeded.
Then proofs of present and absent keys: their canonical size and the time ``verify_proof`` takes, and
reads of the newest value of random keys: from the store (the latest-value index, one LevelDB read;
measured on a second ``JellyfishState`` with no value cache) and again from the value cache.

Reported per size: median milliseconds per block for prepare (CPU time of the committing thread, so
not LevelDB's background compactions), for the synced write (wall time) and in all, plus the whole
commit in wall time; key updates per second from the computation alone (prepare + applied) and with
the synced write; proof bytes and verification microseconds; microseconds per read of a newest value,
from the store and cached. The issue's goals are printed with the
figures measured against them: commit cost at the largest size within 2x of the smallest, and
>= 50,000 key updates/s on one core. They are judged on CPU time: on a shared machine, wall time
also counts CPU taken by other processes.
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
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from state import _jmt_core
from state.codec import encode
from state.jmt import JellyfishState
from state.kv import LevelDBStore
from state.proof import verify_proof

GOAL_RATIO = 2.0
"""Commit cost at the largest size over the cost at the smallest, at most."""
GOAL_UPDATES_PER_S = 50_000
"""Key updates applied per second on one core, at least."""


@dataclass
class SizeResult:
    """Figures for one tree size (times in seconds unless named otherwise)."""

    keys: int
    fill_s: float
    prepare: list[float]
    write: list[float]
    applied: list[float]
    wall: list[float]
    node_writes: list[int]
    proof_bytes_present: float
    proof_bytes_absent: float
    verify_us: float
    prove_us: float
    read_us: float
    cached_read_us: float

    @property
    def wall_total(self) -> float:
        """Median wall-clock seconds per block, as a node would see it (includes CPU stolen by neighbours)."""
        return statistics.median(self.wall)

    @property
    def total(self) -> float:
        """Median seconds per block: prepare + synced write + applied (CPU time for the computing parts)."""
        return statistics.median(p + w + a for p, w, a in zip(self.prepare, self.write, self.applied, strict=True))

    @property
    def compute(self) -> float:
        """Median seconds per block without the write: prepare + applied."""
        return statistics.median(p + a for p, a in zip(self.prepare, self.applied, strict=True))


def _key(i: int) -> bytes:
    return b"\x03acct" + i.to_bytes(8, "big") + b"balance"


def _value(rng: random.Random) -> bytes:
    return encode(rng.getrandbits(64))


def _commit(tree: JellyfishState, store: LevelDBStore, updates: dict[bytes, bytes | None], *,
            sync: bool) -> tuple[float, float, float, float, int]:
    """Commit one version; CPU seconds of prepare and applied, wall seconds of the write and in all, nodes."""
    w0, c0 = time.perf_counter(), time.thread_time()
    root, ops = tree.prepare(updates, tree.version + 1)
    c1 = time.thread_time()
    w1 = time.perf_counter()
    store.write(ops, sync=sync)
    w2 = time.perf_counter()
    c2 = time.thread_time()
    tree.applied(root)
    c3 = time.thread_time()
    return c1 - c0, w2 - w1, c3 - c2, time.perf_counter() - w0, sum(1 for k, _ in ops if k.startswith(b"j/n/"))


class _Bench:
    """One tree of the benchmark: its LevelDB store, the keys written so far and the figures measured."""

    def __init__(self, n: int, args: argparse.Namespace, root_dir: Path) -> None:
        self.n, self.args = n, args
        self.rng = random.Random(args.seed)
        self.directory = Path(tempfile.mkdtemp(prefix=f"bench-state-{n}-", dir=root_dir))
        self.store = LevelDBStore(self.directory)
        self.tree = JellyfishState(self.store, compiled=not args.python_twin)
        self.size = 0
        self.fill_s = 0.0
        self.prepare: list[float] = []
        self.write: list[float] = []
        self.applied: list[float] = []
        self.wall: list[float] = []
        self.nodes: list[int] = []

    def fill(self) -> None:
        """Version 0 (empty), then ``n`` keys in unsynced versions of ``--fill-batch`` keys."""
        _commit(self.tree, self.store, {}, sync=True)
        started = time.perf_counter()
        for lo in range(0, self.n, self.args.fill_batch):
            hi = min(self.n, lo + self.args.fill_batch)
            _commit(self.tree, self.store, {_key(i): _value(self.rng) for i in range(lo, hi)}, sync=False)
        self.size = self.n
        self.fill_s = time.perf_counter() - started

    def block(self, measured: bool, profiler: cProfile.Profile | None) -> None:
        """Commit one block of ``--touched`` keys (``--new-fraction`` of them new), synced."""
        args, rng = self.args, self.rng
        fresh = int(args.touched * args.new_fraction)
        updates: dict[bytes, bytes | None] = {_key(i): _value(rng) for i in range(self.size, self.size + fresh)}
        self.size += fresh
        while len(updates) < args.touched:
            updates[_key(rng.randrange(self.size))] = _value(rng)
        if profiler is not None:
            profiler.enable()
        p, w, a, t, k = _commit(self.tree, self.store, updates, sync=True)
        if profiler is not None:
            profiler.disable()
        if measured:
            self.prepare.append(p)
            self.write.append(w)
            self.applied.append(a)
            self.wall.append(t)
            self.nodes.append(k)

    def result(self) -> SizeResult:
        """Prove present and absent keys, verify the proofs, and gather the figures."""
        rng, tree = self.rng, self.tree
        present = [_key(rng.randrange(self.size)) for _ in range(self.args.proofs)]
        absent = [b"\x03absent" + rng.getrandbits(64).to_bytes(8, "big") for _ in range(self.args.proofs)]
        sizes: dict[bool, list[int]] = {True: [], False: []}
        checks = []
        t_prove = 0.0
        for key in present + absent:
            t0 = time.perf_counter()
            value, proof = tree.prove(key)
            t_prove += time.perf_counter() - t0
            encoded = proof.encode()
            sizes[value is not None].append(len(encoded))
            checks.append((key, value, encoded))
        if len(sizes[True]) != len(present) or len(sizes[False]) != len(absent):
            raise RuntimeError("a proof disagrees with the keys written")
        t0 = time.perf_counter()
        for key, value, encoded in checks:
            verify_proof(tree.root, key, value, encoded)
        verify_us = (time.perf_counter() - t0) / len(checks) * 1e6
        reads = [_key(rng.randrange(self.size)) for _ in range(self.args.reads)]
        uncached = JellyfishState(self.store, cache_values=0)
        t0 = time.thread_time()
        for key in reads:
            uncached.get(key)
        read_us = (time.thread_time() - t0) / len(reads) * 1e6
        for key in reads:
            tree.get(key)
        t0 = time.thread_time()
        for key in reads:
            tree.get(key)
        cached_us = (time.thread_time() - t0) / len(reads) * 1e6
        return SizeResult(self.n, self.fill_s, self.prepare, self.write, self.applied, self.wall, self.nodes,
                          statistics.mean(sizes[True]), statistics.mean(sizes[False]), verify_us,
                          t_prove / len(checks) * 1e6, read_us, cached_us)

    def close(self) -> None:
        """Close the store and remove its directory unless ``--keep``."""
        self.store.close()
        if not self.args.keep:
            shutil.rmtree(self.directory, ignore_errors=True)


def run_bench_state(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmark and print the table; 0 (the goals are reported, not enforced).

    The sizes' blocks are interleaved (block 1 of every size, then block 2 ...), so that a change in
    the machine's speed during the run weighs on every size alike.
    """
    sizes = [int(x) for x in str(args.sizes).split(",")]
    root_dir = Path(args.dir) if args.dir else None
    if root_dir is not None:
        root_dir.mkdir(parents=True, exist_ok=True)
    _jmt_core.set_simd(not args.no_simd)
    simd = _jmt_core.set_simd(not args.no_simd)  # returns what the first call set: on only where the CPU has AVX2
    engine = ("the pure-Python twin" if args.python_twin
              else f"the compiled core, {'four-way AVX2' if simd else 'one-at-a-time'} node hashing")
    console.print(f"[bold]bench-state[/]: blocks of {args.touched:,} touched keys ({args.new_fraction:.0%} new), "
                  f"{args.blocks} measured after {args.warmup} warm-up, LevelDB, synced writes, seed {args.seed}; "
                  f"tree update by {engine}")
    profiler = cProfile.Profile() if args.profile else None
    tmp = Path(tempfile.mkdtemp(prefix="qenex-bench-state-", dir=root_dir))
    benches: list[_Bench] = []
    try:
        for n in sizes:
            bench = _Bench(n, args, tmp)
            benches.append(bench)
            bench.fill()
            console.print(f"  {n:>9,} keys filled in {bench.fill_s:.1f} s")
        for i in range(args.warmup + args.blocks):
            for bench in benches:
                measured = i >= args.warmup
                bench.block(measured, profiler if measured and bench is benches[-1] else None)
        results = [bench.result() for bench in benches]
    finally:
        _jmt_core.set_simd(True)
        for bench in benches:
            bench.close()
        if args.keep:
            console.print(f"LevelDB directories kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    console.print()
    console.print("(prepare and applied in CPU time of the committing thread; the write in wall time; 'wall ms' is"
                  " the whole commit in wall time, which also counts CPU taken by other processes)")
    console.print(f"{'keys':>10} {'prepare ms':>10} {'write ms':>9} {'commit ms':>9} {'wall ms':>8} {'nodes/blk':>9} "
                  f"{'upd/s cpu':>10} {'upd/s sync':>10} {'proof B in/out':>15} {'verify us':>9} {'prove us':>8} "
                  f"{'get us':>6} {'cached':>6}")
    for r in results:
        console.print(
            f"{r.keys:>10,} {statistics.median(r.prepare) * 1e3:>10.1f} {statistics.median(r.write) * 1e3:>9.1f} "
            f"{r.total * 1e3:>9.1f} {r.wall_total * 1e3:>8.1f} {statistics.median(r.node_writes):>9.0f} "
            f"{args.touched / r.compute:>10,.0f} {args.touched / r.total:>10,.0f} "
            f"{r.proof_bytes_present:>7.0f}/{r.proof_bytes_absent:<7.0f} {r.verify_us:>9.0f} {r.prove_us:>8.0f} "
            f"{r.read_us:>6.1f} {r.cached_read_us:>6.1f}"
        )
    first, last = results[0], results[-1]
    ratio = last.total / first.total
    console.print()
    console.print(f"goal: commit at {last.keys:,} keys within {GOAL_RATIO:g}x of {first.keys:,}: "
                  f"{ratio:.2f}x ({'met' if ratio <= GOAL_RATIO else 'NOT met'}; the computation alone: "
                  f"{last.compute / first.compute:.2f}x)")
    rate = args.touched / last.compute
    console.print(f"goal: >= {GOAL_UPDATES_PER_S:,} key updates/s on one core at {last.keys:,} keys: "
                  f"{rate:,.0f}/s computing, {args.touched / last.total:,.0f}/s with the synced write "
                  f"({'met' if rate >= GOAL_UPDATES_PER_S else 'NOT met'} for the computation)")
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        console.print(out.getvalue())
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``qenex-devnet bench-state``."""
    p.add_argument("--sizes", default="10000,100000,1000000", help="tree sizes in keys, comma separated")
    p.add_argument("--blocks", type=int, default=20, help="measured blocks per size")
    p.add_argument("--warmup", type=int, default=2, help="blocks committed before measuring")
    p.add_argument("--touched", type=int, default=1000, help="keys touched per block")
    p.add_argument("--new-fraction", type=float, default=0.1, help="share of the touched keys that are new")
    p.add_argument("--fill-batch", type=int, default=50_000, help="keys per version while filling")
    p.add_argument("--proofs", type=int, default=200, help="proofs of present and of absent keys")
    p.add_argument("--reads", type=int, default=5000, help="reads of the newest value of random keys")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="where to create the temporary LevelDB directories")
    p.add_argument("--keep", action="store_true", help="keep the LevelDB directories")
    p.add_argument("--profile", action="store_true", help="cProfile the measured blocks of the largest size")
    p.add_argument("--python-twin", action="store_true",
                   help="update the tree with the pure-Python twin instead of the compiled core (state/_jmt_core.c)")
    p.add_argument("--no-simd", action="store_true",
                   help="compiled core: hash nodes one at a time, without the four-way AVX2 hashing")
