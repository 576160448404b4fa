"""The state tree on LevelDB survives a real process being SIGKILLed at random points, and a torn log.

A worker process (this module run as ``python -m tests.test_state_crash``) commits versions of random
updates to a ``JellyfishState`` on a ``LevelDBStore`` in a loop, as the chain store does: ``prepare``,
one synced write batch, ``applied``; every few versions it also prunes outside a retention window.
The updates of version ``v`` are a function of the seed and ``v`` only, so the test can recompute the
root of any version without trusting the worker; the worker appends ``version root`` to a log file
after each synced commit (what it would have reported to a client).

The test kills the worker by its pid at random points (each round waits for a random number of new
commits, so the kill lands anywhere in the loop: hashing, writing, pruning), and once truncates the
tail of LevelDB's write-ahead log, as a disk that lost its last writes would. After each kill it
reopens the store and checks: the version is consistent (every acknowledged commit is there, except
after the torn log), its root is the recomputed one, ``audit`` passes (every hash, the latest-value
index), reads of the newest and of older retained versions agree with the recomputed contents, and
proofs verify. The seed is printed on failure; ``QENEX_CRASH_SEED`` replays one.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import pytest
import trio

from crypto.hashing import Hash32
from state.jmt import JellyfishState, root_of
from state.kv import LevelDBStore
from state.proof import verify_proof
from tests.conftest import poll_until

KEYS = 2_000
"""Size of the key space the worker writes into."""
PER_VERSION = 60
"""Updates per version (about one in six a delete)."""
RETAIN = 6
"""Versions the worker keeps readable (it prunes the ones before)."""
ROUNDS = 5
TORN_ROUND = 2
"""The round after whose kill the tail of the LevelDB log is cut."""
REPO = Path(__file__).resolve().parent.parent


def updates_for(seed: int, version: int) -> dict[bytes, bytes | None]:
    """The updates of ``version``: a function of ``seed`` and ``version`` alone."""
    rng = random.Random(f"{seed}/{version}")
    out: dict[bytes, bytes | None] = {}
    for _ in range(PER_VERSION):
        key = b"key/%d" % rng.randrange(KEYS)
        out[key] = None if rng.random() < 0.17 else rng.randbytes(rng.randrange(1, 40))
    return out


def worker(directory: str, seed: int, log_path: str) -> None:
    """Commit versions forever (until killed); log each acknowledged one."""
    store = LevelDBStore(directory)
    tree = JellyfishState(store)
    with open(log_path, "a+", encoding="ascii") as log:
        log.seek(0)
        written = log.read()
        if written and not written.endswith("\n"):  # a line cut by the last kill: end it
            log.write("\n")
        if tree.version < 0:
            root, ops = tree.prepare({}, 0)
            store.write(ops, sync=True)
            tree.applied(root)
        while tree.version < 1_000_000:
            version = tree.version + 1
            root, ops = tree.prepare(updates_for(seed, version), version)
            store.write(ops, sync=True)
            tree.applied(root)
            log.write(f"{version} {root.hex()}\n")
            log.flush()
            if version % 3 == 0:
                tree.prune(version - RETAIN, 150)


class Model:
    """The contents of every version, recomputed from the seed (not from the store)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.versions: list[dict[bytes, bytes]] = [{}]

    def at(self, version: int) -> dict[bytes, bytes]:
        while len(self.versions) <= version:
            contents = dict(self.versions[-1])
            for key, value in updates_for(self.seed, len(self.versions)).items():
                if value is None:
                    contents.pop(key, None)
                else:
                    contents[key] = value
            self.versions.append(contents)
        return self.versions[version]


def logged(log_path: Path) -> dict[int, str]:
    """The versions the worker reported committed, with their roots (hex)."""
    if not log_path.exists():
        return {}
    out: dict[int, str] = {}
    for line in log_path.read_text(encoding="ascii").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and len(fields[1]) == 64:
            out[int(fields[0])] = fields[1]
    return out


def acknowledged(log_path: Path) -> int:
    """The last version the worker reported committed (-1: none)."""
    return max(logged(log_path), default=-1)


def tear_log_tail(directory: Path, rng: random.Random) -> int:
    """Cut up to 4 KiB off the end of LevelDB's current write-ahead log; the bytes cut."""
    logs = sorted(directory.glob("*.log"), key=lambda p: int(p.stem))
    if not logs:
        return 0
    log = logs[-1]
    size = log.stat().st_size
    cut = min(size, rng.randint(1, 4096))
    with open(log, "r+b") as f:
        f.truncate(size - cut)
    return cut


def check_store(directory: Path, model: Model, log: dict[int, str], *, at_least: int, rng: random.Random) -> int:
    """Reopen the store and check it against the model and the worker's log; the version it holds."""
    store = LevelDBStore(directory, create=False)
    try:
        tree = JellyfishState(store)
        version = tree.version
        assert version >= at_least, f"acknowledged version {at_least} lost: the store is at {version}"
        contents = model.at(version)
        assert tree.root == root_of(contents), f"version {version}: root differs from the recomputed one"
        assert log.get(version, tree.root.hex()) == tree.root.hex(), f"version {version}: not the logged root"
        assert tree.audit() == len(contents)
        keys = [b"key/%d" % rng.randrange(KEYS) for _ in range(40)]
        for key in keys:
            assert tree.get(key) == contents.get(key)
            value, proof = tree.prove(key)
            assert value == contents.get(key)
            verify_proof(Hash32(tree.root), key, value, proof)
        for old in range(tree.oldest_version, version):
            assert tree.root_at(old) == root_of(model.at(old))
            for key in keys[:5]:
                assert tree.get(key, old) == model.at(old).get(key)
        return version
    finally:
        store.close()


@pytest.mark.slow
async def test_state_survives_sigkill_and_a_torn_log(tmp_path: Path) -> None:
    seed = int(os.environ.get("QENEX_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash test seed {seed} (QENEX_CRASH_SEED={seed} replays it)")
    rng = random.Random(seed)
    model = Model(seed)
    directory, log_path = tmp_path / "db", tmp_path / "acknowledged.log"
    version = -1
    checked: set[int] = set()
    for round_ in range(ROUNDS):
        before = acknowledged(log_path)
        target = before + rng.randint(2, 25)
        errors = tmp_path / f"worker-{round_}.err"
        with open(errors, "wb") as stderr:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tests.test_state_crash", str(directory), str(seed), str(log_path)],
                cwd=REPO, stderr=stderr,
            )
            try:
                await poll_until(lambda p=proc, t=target: acknowledged(log_path) >= t or p.poll() is not None,
                                 what=f"the worker commits version {target}", timeout=30, interval=0.005)
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                status = await proc.wait()
        assert status == -signal.SIGKILL, f"the worker stopped by itself ({status}): {errors.read_text()}"
        torn = round_ == TORN_ROUND and tear_log_tail(directory, rng) > 0
        log = logged(log_path)
        done = max(log, default=-1)
        for v in sorted(set(log) - checked):  # every acknowledged root is the recomputed one
            assert log[v] == root_of(model.at(v)).hex(), f"the worker acknowledged a wrong root for version {v}"
            checked.add(v)
        version = check_store(directory, model, log, at_least=-1 if torn else done, rng=rng)
        assert version <= done + 1, "at most the version being written when killed is there unacknowledged"
        print(f"round {round_}: killed after acknowledging {done}, the store holds {version}"
              + (" (log tail torn)" if torn else ""))
        if torn:  # what the store lost is no longer acknowledged
            log_path.write_text("".join(f"{v} {root}\n" for v, root in sorted(log.items()) if v <= version),
                                encoding="ascii")
    assert version >= 10, "the worker made progress"


if __name__ == "__main__":
    worker(sys.argv[1], int(sys.argv[2]), sys.argv[3])
