"""The main job end to end: ``qenex-devnet up --exit-after-demo`` with four real validator processes.

Runs the demo with fewer transactions on ports of its own, checks the summary (four identical
state roots, every balance as expected), then restarts the same chain and checks that its blocks
survived and it still commits. Every process is stopped by its pid (the devnet does it; on a
timeout the test interrupts the devnet with SIGINT so that it stops its nodes).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def free_block(count: int) -> int:
    """A base port such that base..base+count-1 are free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count >= 65535:
            continue
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def run_devnet(args: list[str], timeout: float = 400) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "devnet.cli", "up", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the devnet stops its nodes in its finally block
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"devnet timed out:\n{out[-4000:]}")
    return proc.returncode, out


def summary_rows(out: str) -> list[tuple[str, int, str]]:
    pattern = r"(node-\d)\s+height\s+(\d+)\s+state root (0x[0-9a-f]{64})"
    return [(m[1], int(m[2]), m[3]) for m in re.finditer(pattern, out)]


def test_devnet_demo_then_restart(tmp_path: Path) -> None:
    home = tmp_path / "devnet"
    base = free_block(8)
    ports = ["--base-rpc-port", str(base), "--base-p2p-port", str(base + 4)]
    common = ["--home", str(home), "--exit-after-demo", "--accounts", "20", "--transfers", "200", "--seed", "7", *ports]
    code, out = run_devnet(["--fresh", *common])
    assert code == 0, out[-4000:]
    assert "all checks passed" in out
    rows = summary_rows(out)
    assert [r[0] for r in rows] == ["node-0", "node-1", "node-2", "node-3"]
    assert len({r[2] for r in rows}) == 1, rows
    assert "222 committed (1 deploy, 1 mint, 20 funding, 200 transfers)" in out
    first_height = min(r[1] for r in rows)
    for i in range(4):
        log = (home / f"node-{i}" / "node.log").read_text()
        assert "stopped cleanly" in log, f"node-{i} did not shut down cleanly"

    code, out = run_devnet(common)
    assert code == 0, out[-4000:]
    assert "restarting chain" in out
    m = re.search(r"connected at height (\d+)", out)
    assert m is not None and int(m[1]) >= first_height, "blocks did not survive the restart"
    rows = summary_rows(out)
    assert len({r[2] for r in rows}) == 1 and min(r[1] for r in rows) > first_height


def test_devnet_names_the_failing_node_and_its_log(tmp_path: Path) -> None:
    home = tmp_path / "devnet"
    base = free_block(8)
    ports = ["--base-rpc-port", str(base), "--base-p2p-port", str(base + 4)]
    init = subprocess.run([sys.executable, "-m", "devnet.cli", "init", "--home", str(home), *ports],
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    config = home / "node-2" / "config.toml"
    config.write_text(config.read_text().replace("[node]\n", "[node]\nno_such_option = 1\n"))
    code, out = run_devnet(["--home", str(home), "--exit-after-demo", *ports], timeout=120)
    assert code == 1
    assert "devnet failed: node-2 exited with status 2" in out
    assert str(home / "node-2" / "node.log") in out
    assert "unknown option node.no_such_option" in out  # the tail of its log says why
    assert "stopped 4 validator processes" in out
