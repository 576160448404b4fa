"""Starting and stopping the validator processes (``qenex-node start --home …``), by their pids."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import trio

from devnet.layout import NodeInfo


class NodeFailed(Exception):
    """Raised when a node process exits while it should run; says which node and where its log is."""

    def __init__(self, node: NodeInfo, returncode: int | None) -> None:
        tail = ""
        try:
            tail = "\n".join(node.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            pass
        super().__init__(f"{node.name} exited with status {returncode}; its log is {node.log_path}\n{tail}")
        self.node = node
        self.returncode = returncode


@dataclass
class Running:
    """A started node process and its log file."""

    node: NodeInfo
    process: trio.Process
    log: IO[bytes]


async def start_node(node: NodeInfo) -> Running:
    """Start ``qenex-node start --home <home>`` with output appended to ``<home>/node.log``."""
    log = open(Path(node.home) / "node.log", "ab")  # noqa: ASYNC230, SIM115 - local file, closed in stop_node
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "node.cli", "start", "--home", node.home],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    return Running(node, process, log)


async def stop_node(running: Running, *, timeout: float = 10.0) -> int | None:
    """SIGTERM the process (by its pid), wait up to ``timeout`` s, then SIGKILL; returns its status."""
    proc = running.process
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
    running.log.close()
    return proc.returncode


def check_alive(running: list[Running]) -> None:
    """Raise ``NodeFailed`` for the first process that has exited."""
    for r in running:
        if r.process.poll() is not None:
            raise NodeFailed(r.node, r.process.returncode)
