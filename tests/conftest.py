"""Shared fixtures: a single-validator node running in-process with its real RPC server; and
``poll_until``, the one polled-deadline wait of the suite."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import trio

from crypto.keys import KeyPair
from crypto.signatures import ED25519
from node.config import ConsensusSection, LogSection, NodeConfig, P2PSection, RPCSection
from node.logs import apply_levels
from node.node import Node
from node.rpc.client import AsyncClient
from node.setup import NodeKeys, validator_entry
from state.kv import MemoryStore
from state.types import Genesis


async def poll_until(
    check: Callable[[], bool | Awaitable[bool]], *, what: str, timeout: float = 60.0, interval: float = 0.1,
    tolerate: tuple[type[BaseException], ...] = (),
) -> None:
    """Call ``check`` (sync or async) every ``interval`` seconds until it is true; fail the test
    naming ``what`` after ``timeout`` seconds. Exceptions of the ``tolerate`` types count as false
    (a process still starting refuses connections).

    For conditions that nothing signals: other processes, sockets, several nodes' state (STYLE.md
    allows polling with a deadline there). Inside one process, wait on an event instead.
    """
    try:
        with trio.fail_after(timeout):
            while True:
                try:
                    result = check()
                    if inspect.isawaitable(result):
                        result = await result
                    if result:
                        return
                except tolerate:
                    pass
                await trio.sleep(interval)
    except trio.TooSlowError:
        pytest.fail(f"timed out after {timeout} s waiting until {what}")


STARTING = (httpx.TransportError,)
"""What a node's RPC raises while its process is still starting (for ``poll_until(tolerate=...)``)."""


async def height_at_least(client: AsyncClient, target: int) -> bool:
    """Whether the node behind ``client`` has committed height ``target``."""
    return bool((await client.call("qnx_status"))["height"] >= target)


@dataclass
class LiveNode:
    """A running node, its RPC URL and an HTTP client for it."""

    node: Node
    url: str
    http: httpx.AsyncClient

    async def rpc(self, method: str, *params: object) -> httpx.Response:
        """POST one JSON-RPC request; returns the raw HTTP response."""
        return await self.http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                    "params": list(params)})


async def start_solo_node(nursery: trio.Nursery, rpc: RPCSection | None = None,
                          consensus: ConsensusSection | None = None) -> Node:
    """Start one validator (n = 1, so it commits alone) on ephemeral 127.0.0.1 ports in ``nursery``.

    Default ``rpc``: 64 KiB bodies, batches of 10; default ``consensus``: 50 ms blocks, no empty ones.
    Its HTTP JSON-RPC URL is ``node.rpc_urls[0] + "/"``.
    """
    keys = NodeKeys(KeyPair.generate(), KeyPair.generate(ED25519))
    genesis = Genesis("qenex-test", 1_700_000_000_000, (validator_entry("solo", keys),))
    config = NodeConfig(
        rpc=rpc or RPCSection(host="127.0.0.1", port=0, max_body_bytes=64 * 1024, max_batch=10),
        p2p=P2PSection(host="127.0.0.1", port=0),
        consensus=consensus or ConsensusSection(block_interval_ms=50, empty_block_interval_ms=0),
    )
    node = Node(config=config, genesis=genesis, store=MemoryStore(), node_key=keys.node,
                validator_key=keys.validator)
    await nursery.start(node.run)
    return node


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and levels back after every test: one that configures logging
    (as ``qenex-node start`` does) would otherwise leave a handler on pytest's captured stderr, closed
    after the test, and every later log line would fail."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    apply_levels(LogSection(level=logging.getLevelName(level) if level else "WARNING"))
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def live_node(nursery: trio.Nursery) -> AsyncIterator[LiveNode]:
    """One validator (n = 1, so it commits alone) with RPC on an ephemeral 127.0.0.1 port."""
    node = await start_solo_node(nursery)
    url = node.rpc_urls[0] + "/"
    async with httpx.AsyncClient(timeout=30) as http:
        yield LiveNode(node, url, http)
