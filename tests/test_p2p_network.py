"""PeerNetwork over real TCP on 127.0.0.1: connections, messages, refusals, restarts, slow peers.

(The security of the transport itself, a man in the middle, limits, scoring and bans, is in
``test_p2p_secure.py``, which reuses the helpers here.)

Every wait is on an event or a poll with a deadline (``trio.fail_after``); nothing sleeps to let
things settle. Nodes listen on port 0 and report their port through ``task_status``; since only the
lower node id dials, nodes are started from the highest id down, each told the ports of the ones
above it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from crypto.keys import Address, KeyPair
from crypto.signatures import ED25519, ML_DSA_44
from p2p.framing import HEADER_LEN, FrameDecoder, encode_frame
from p2p.handshake import Handshake, Role
from p2p.limits import PENALTY_BAD_FRAME
from p2p.network import PeerNetwork, backoff_delay
from p2p.session import TAG_LEN, SecureSession
from tests.conftest import poll_until

CHAIN = "qenex-test"
GENESIS = bytes(range(32))
HOST = "127.0.0.1"
DEADLINE = 10.0  # seconds; a generous bound on every wait, never a pause

Inbound = tuple[Address, bytes]


def allowlist(*keys: KeyPair) -> dict[Address, tuple[int, bytes]]:
    return {k.address: (k.scheme_tag, k.public_key) for k in keys}


def keys_ordered(n: int, scheme: Any = ED25519) -> list[KeyPair]:
    """``n`` fresh key pairs sorted by node id, lowest first (so index order is dial order)."""
    return sorted((KeyPair.generate(scheme) for _ in range(n)), key=lambda k: k.address)


@dataclass
class Node:
    key: KeyPair
    net: PeerNetwork
    inbound: trio.MemoryReceiveChannel[Inbound]
    events: trio.MemoryReceiveChannel[tuple[str, Address]]
    port: int
    scope: trio.CancelScope

    @property
    def id(self) -> Address:
        return self.key.address


async def _run_in_scope(net: PeerNetwork, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(net.run)
            task_status.started((port, scope))


async def start_node(
    nursery: trio.Nursery,
    key: KeyPair,
    allowed: dict[Address, tuple[int, bytes]],
    peers: dict[Address, tuple[str, int]],
    *,
    port: int = 0,
    **overrides: Any,
) -> Node:
    """Start a PeerNetwork for ``key`` in ``nursery``; return it once it listens."""
    inbound_send, inbound_recv = trio.open_memory_channel[Inbound](1000)
    events_send, events_recv = trio.open_memory_channel[tuple[str, Address]](1000)
    settings: dict[str, Any] = {
        "handshake_timeout": 3.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.2,
        "rng": random.Random(1),
    }
    settings.update(overrides)
    net = PeerNetwork(
        identity=key,
        chain_id=CHAIN,
        genesis_hash=GENESIS,
        listen_host=HOST,
        listen_port=port,
        peers=peers,
        allowed=allowed,
        inbound=inbound_send,
        peer_events=events_send,
        **settings,
    )
    actual_port, scope = await nursery.start(_run_in_scope, net)
    return Node(key, net, inbound_recv, events_recv, actual_port, scope)


async def start_cluster(nursery: trio.Nursery, keys: list[KeyPair], **overrides: Any) -> list[Node]:
    """Start one node per key (all allowed), highest id first; return them in ``keys`` order."""
    allowed = allowlist(*keys)
    started: dict[Address, Node] = {}
    for key in sorted(keys, key=lambda k: k.address, reverse=True):
        peers = {a: (HOST, n.port) for a, n in started.items()}
        started[key.address] = await start_node(nursery, key, allowed, peers, **overrides)
    return [started[k.address] for k in keys]


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until true, failing after ``DEADLINE`` seconds.

    Polling, not a ``trio.Event``: the conditions span several networks, kernel sockets and log
    records, which signal nothing we could wait on; STYLE.md allows polling with a deadline.
    """
    await poll_until(predicate, what=what, timeout=DEADLINE, interval=0.005)


async def wait_fully_connected(nodes: Iterable[Node]) -> None:
    nodes = list(nodes)
    ids = {n.id for n in nodes}
    await wait_until(lambda: all(n.net.connected() == ids - {n.id} for n in nodes), "every pair of nodes is connected")


async def receive(node: Node, count: int) -> list[Inbound]:
    with trio.fail_after(DEADLINE):
        return [await node.inbound.receive() for _ in range(count)]


# -- raw clients, to play a peer by hand -----------------------------------------------------------


async def read_frame(stream: trio.SocketStream, decoder: FrameDecoder) -> bytes | None:
    """The next frame, or None once the other side closed the connection."""
    while (frame := decoder.next_frame()) is None:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return None
        if not data:
            return None
        decoder.receive_data(data)
    return frame


async def expect_closed(stream: trio.SocketStream) -> None:
    """Wait (bounded) until the node closes ``stream``, ignoring what it still sends; close our end."""
    async with stream:
        with trio.fail_after(DEADLINE):
            decoder = FrameDecoder()
            while await read_frame(stream, decoder) is not None:
                pass


@dataclass
class RawPeer:
    """A peer played by hand over a socket: the authenticated stream and its session."""

    stream: trio.SocketStream
    decoder: FrameDecoder
    session: SecureSession

    def seal(self, payload: bytes) -> bytes:
        """The next frame carrying ``payload``, as it goes on the wire."""
        return encode_frame(self.session.seal(payload), self.session.max_frame)

    async def send(self, payload: bytes) -> None:
        await self.stream.send_all(self.seal(payload))

    async def receive(self) -> bytes | None:
        """The next message (opened), or None once the node closed the connection."""
        frame = await read_frame(self.stream, self.decoder)
        return None if frame is None else self.session.open(frame)


async def raw_handshake(
    port: int,
    key: KeyPair,
    allowed: dict[Address, tuple[int, bytes]],
    *,
    chain_id: str = CHAIN,
    genesis_hash: bytes = GENESIS,
    **handshake_args: Any,
) -> RawPeer | None:
    """Dial ``port`` and handshake as initiator; the peer, or None if the node hung up on us."""
    stream = await trio.open_tcp_stream(HOST, port)
    hs = Handshake(key, Role.INITIATOR, chain_id, genesis_hash, allowed, **handshake_args)
    decoder = FrameDecoder()
    with trio.fail_after(DEADLINE):
        for message in hs.start():
            await stream.send_all(encode_frame(message))
        while not hs.is_done:
            frame = await read_frame(stream, decoder)
            if frame is None:
                await stream.aclose()
                return None
            for message in hs.receive(frame):
                await stream.send_all(encode_frame(message))
    return RawPeer(stream, decoder, hs.session)


# -- tests ------------------------------------------------------------------------------------------


async def test_three_nodes_connect_and_exchange_both_ways() -> None:
    async with trio.open_nursery() as nursery:
        nodes = await start_cluster(nursery, keys_ordered(3))
        await wait_fully_connected(nodes)
        for src in nodes:
            for dst in nodes:
                if src is not dst:
                    assert src.net.send(dst.id, b"from " + src.id + b" to " + dst.id)
        for dst in nodes:
            got = sorted(await receive(dst, 2))
            expected = sorted((s.id, b"from " + s.id + b" to " + dst.id) for s in nodes if s is not dst)
            assert got == expected
        for node in nodes:  # each saw a "connected" event for each other node
            with trio.fail_after(DEADLINE):
                seen = {await node.events.receive() for _ in range(2)}
            assert seen == {("connected", other.id) for other in nodes if other is not node}
        nursery.cancel_scope.cancel()


async def test_broadcast_reaches_every_peer_in_order() -> None:
    async with trio.open_nursery() as nursery:
        nodes = await start_cluster(nursery, keys_ordered(3))
        await wait_fully_connected(nodes)
        for i, sender in enumerate(nodes):
            for j in range(5):
                assert sender.net.broadcast(bytes([i, j])) == 2
        for receiver in nodes:
            got = await receive(receiver, 10)
            for i, sender in enumerate(nodes):
                if sender is not receiver:  # per-sender order is kept
                    assert [p for s, p in got if s == sender.id] == [bytes([i, j]) for j in range(5)]
        nursery.cancel_scope.cancel()


async def test_wire_bytes_are_counted_sealed_and_framed() -> None:
    """``counters`` count what crosses the socket: per message its payload + 16-byte tag + 4-byte
    length header, and the handshake too (so each side's sent total is the other's received total)."""
    async with trio.open_nursery() as nursery:
        low, high = await start_cluster(nursery, keys_ordered(2))
        await wait_fully_connected([low, high])
        assert low.net.counters.wire_bytes_sent > 0  # the handshake
        sent_before, received_before = low.net.counters.wire_bytes_sent, high.net.counters.wire_bytes_received
        messages = [b"", b"x", b"y" * 1000, b"z" * 70_000]
        for m in messages:
            assert low.net.send(high.id, m)
        assert await receive(high, len(messages)) == [(low.id, m) for m in messages]
        on_wire = sum(len(m) + TAG_LEN + HEADER_LEN for m in messages)
        assert high.net.counters.wire_bytes_received - received_before == on_wire
        await wait_until(lambda: low.net.counters.wire_bytes_sent - sent_before == on_wire, "the writer counted")
        for a, b in ((low, high), (high, low)):
            assert a.net.counters.wire_bytes_sent == b.net.counters.wire_bytes_received
        assert low.net.counters.throttled_reads == high.net.counters.throttled_reads == 0  # far below the rate
        nursery.cancel_scope.cancel()


async def test_ml_dsa_44_nodes_connect_and_exchange() -> None:
    async with trio.open_nursery() as nursery:
        low, high = await start_cluster(nursery, keys_ordered(2, ML_DSA_44))
        await wait_fully_connected([low, high])
        assert low.net.send(high.id, b"ping")
        assert await receive(high, 1) == [(low.id, b"ping")]
        assert high.net.send(low.id, b"pong")
        assert await receive(low, 1) == [(high.id, b"pong")]
        nursery.cancel_scope.cancel()


async def test_unlisted_identity_cannot_connect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    a, b = keys_ordered(2)
    mallory = KeyPair.generate(ED25519)
    async with trio.open_nursery() as nursery:
        node_a, node_b = await start_cluster(nursery, [a, b])
        await wait_fully_connected([node_a, node_b])

        # By hand: the node hangs up right after Mallory's Hello, without answering.
        assert await raw_handshake(node_b.port, mallory, allowlist(mallory, b)) is None

        # As a PeerNetwork that lists the victim and dials it (its id must be the lower one).
        while not mallory.address < b.address:
            mallory = KeyPair.generate(ED25519)
        intruder = await start_node(nursery, mallory, allowlist(mallory, b), {b.address: (HOST, node_b.port)})
        await wait_until(
            lambda: sum("not in the allowlist" in r.getMessage() for r in caplog.records) >= 3,
            "the intruder was refused a few times",
        )
        intruder.scope.cancel()
        assert node_b.net.connected() == {a.address}
        assert intruder.net.connected() == frozenset()

        # Nothing from Mallory reached B: the first payload B receives is A's.
        assert node_a.net.send(b.address, b"after the intruder")
        assert await receive(node_b, 1) == [(a.address, b"after the intruder")]
        nursery.cancel_scope.cancel()


async def test_restarted_peer_is_reconnected_and_messages_flow() -> None:
    keys = keys_ordered(3)
    allowed = allowlist(*keys)
    async with trio.open_nursery() as nursery:
        nodes = await start_cluster(nursery, keys)
        await wait_fully_connected(nodes)
        low, mid, high = nodes

        mid.scope.cancel()  # mid crashes: its sockets close, the others notice
        await wait_until(
            lambda: mid.id not in low.net.connected() and mid.id not in high.net.connected(),
            "low and high saw mid go away",
        )
        restarted = await start_node(nursery, mid.key, allowed, {high.id: (HOST, high.port)}, port=mid.port)
        assert restarted.port == mid.port
        await wait_fully_connected([low, restarted, high])

        for other in (low, high):
            assert other.net.send(mid.id, b"welcome back")
            assert restarted.net.send(other.id, b"thanks")
            assert await receive(other, 1) == [(mid.id, b"thanks")]
        assert sorted(await receive(restarted, 2)) == sorted([(low.id, b"welcome back"), (high.id, b"welcome back")])
        nursery.cancel_scope.cancel()


async def test_inbound_connection_replaces_the_old_one() -> None:
    """A peer that restarted before we noticed: its new connection wins, the old one is closed."""
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, high, allowed, {})
        first = await raw_handshake(server.port, low, allowed)
        assert first is not None
        await wait_until(lambda: server.net.connected() == {low.address}, "the first connection is up")
        await first.send(b"over the first")
        assert await receive(server, 1) == [(low.address, b"over the first")]

        second = await raw_handshake(server.port, low, allowed)
        assert second is not None
        await expect_closed(first.stream)
        with trio.fail_after(DEADLINE):
            events = [await server.events.receive() for _ in range(3)]
        assert events == [("connected", low.address), ("disconnected", low.address), ("connected", low.address)]
        assert server.net.connected() == {low.address}

        assert server.net.send(low.address, b"to the second")
        with trio.fail_after(DEADLINE):
            assert await second.receive() == b"to the second"
        await second.send(b"over the second")
        assert await receive(server, 1) == [(low.address, b"over the second")]
        await second.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_bad_bytes_close_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, high, allowed, {}, max_frame_size=1024)

        # Garbage and an oversize header before the handshake: hung up on.
        for junk in (b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", bytes(range(256)) * 4):
            stream = await trio.open_tcp_stream(HOST, server.port)
            await stream.send_all(junk)
            await expect_closed(stream)

        # A listed peer that sends a frame over the limit after the handshake: hung up on. The limit
        # is on the sealed frame: 1,024 bytes of message plus the 16-byte tag.
        conn = await raw_handshake(server.port, low, allowed)
        assert conn is not None
        await wait_until(lambda: server.net.connected() == {low.address}, "the peer is connected")
        await conn.stream.send_all(conn.seal(b"fine") + (1024 + 16 + 1).to_bytes(4, "big"))
        await expect_closed(conn.stream)
        await wait_until(lambda: not server.net.connected(), "the peer was dropped")
        assert await receive(server, 1) == [(low.address, b"fine")]
        assert any("FrameTooLarge" in r.getMessage() for r in caplog.records)

        # The node is still serving: a well-behaved peer connects and talks.
        peer = await start_node(nursery, low, allowed, {high.address: (HOST, server.port)})
        await wait_fully_connected([server, peer])
        assert peer.net.send(high.address, b"still alive")
        assert await receive(server, 1) == [(low.address, b"still alive")]
        nursery.cancel_scope.cancel()


async def test_bad_frame_while_the_writer_is_busy_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: a sealed frame that fails to open arrives while the node's writer for that peer is
    already scheduled (a backlog of messages to it): the reader fails the session and cancels the
    connection, and the writer must stop without sealing (it used to raise out of ``run`` and crash the
    node). Repeated 20 times with the garbage sent after a varying part of the backlog, each time with
    a fresh listed key; afterwards the node still talks to a well-behaved peer both ways."""
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    attempts = 20
    keys = keys_ordered(attempts + 2)
    good, bad_keys, hub_key = keys[0], keys[1:-1], keys[-1]
    allowed = allowlist(*keys)
    rng = random.Random(7)
    async with trio.open_nursery() as nursery:
        hub = await start_node(nursery, hub_key, allowed, {}, score_recovery=0.0, send_queue_bytes=4 << 20)
        peer = await start_node(nursery, good, allowed, {hub_key.address: (HOST, hub.port)})
        await wait_fully_connected([hub, peer])
        for key in bad_keys:
            bad = await raw_handshake(hub.port, key, allowed)
            assert bad is not None
            await wait_until(lambda key=key: key.address in hub.net.connected(), "the bad peer is connected")
            threshold = rng.randrange(1, 16) * 64 * 1024  # bytes read before the garbage goes out
            enough = trio.Event()

            async def drain(stream: trio.SocketStream, threshold: int, enough: trio.Event) -> None:
                received = 0
                try:
                    while data := await stream.receive_some(1 << 20):
                        received += len(data)
                        if received >= threshold:
                            enough.set()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async def backlog(address: Address) -> None:
                while True:  # keep the writer busy: its queue never runs dry while connected
                    for _ in range(50):
                        hub.net.send(address, b"x" * 20_000)
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as attempt:
                attempt.start_soon(drain, bad.stream, threshold, enough)
                attempt.start_soon(backlog, key.address)
                with trio.fail_after(DEADLINE):
                    await enough.wait()
                await bad.stream.send_all(encode_frame(b"\0" * 40))  # a sealed frame that does not open
                await wait_until(lambda key=key: key.address not in hub.net.connected(), "the bad peer was dropped")
                attempt.cancel_scope.cancel()
            await bad.stream.aclose()
            assert hub.net.score(key.address) == -PENALTY_BAD_FRAME
        assert sum("DecryptionFailed" in r.getMessage() for r in caplog.records) == attempts
        assert hub.net.connected() == {good.address}  # run kept going: the good peer was never dropped
        assert hub.net.send(good.address, b"still serving") and peer.net.send(hub_key.address, b"and listening")
        assert await receive(peer, 1) == [(hub_key.address, b"still serving")]
        assert await receive(hub, 1) == [(good.address, b"and listening")]
        nursery.cancel_scope.cancel()


async def test_silent_connection_times_out_in_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    (key,) = keys_ordered(1)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, key, allowlist(key), {}, handshake_timeout=0.2)
        stream = await trio.open_tcp_stream(HOST, server.port)
        await expect_closed(stream)  # we send nothing; it hangs up after 0.2 s
        assert any("not completed within" in r.getMessage() for r in caplog.records)
        nursery.cancel_scope.cancel()


async def test_inbound_from_a_higher_node_id_is_refused() -> None:
    """Only the lower id dials, so each pair has one connection; a higher id dialing in is refused."""
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, low, allowed, {})
        conn = await raw_handshake(server.port, high, allowed)  # authenticates, then is dropped
        assert conn is not None
        await expect_closed(conn.stream)
        assert server.net.connected() == frozenset()
        nursery.cancel_scope.cancel()


async def test_slow_peer_does_not_block_the_others() -> None:
    slow, fast, hub = keys_ordered(3)
    allowed = allowlist(slow, fast, hub)
    big = b"x" * (1 << 20)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, hub, allowed, {}, send_queue_size=4)
        conn = await raw_handshake(server.port, slow, allowed)  # authenticates, then never reads
        assert conn is not None
        peer = await start_node(nursery, fast, allowed, {hub.address: (HOST, server.port)})
        await wait_until(
            lambda: server.net.connected() == {slow.address, fast.address} and peer.net.connected() == {hub.address},
            "both peers are connected",
        )

        with trio.fail_after(DEADLINE):  # kernel buffers fill up, then the slow peer's queue
            sent = 0
            while server.net.send(slow.address, big):
                sent += 1
                await trio.testing.wait_all_tasks_blocked()
        assert sent > 4  # the writer holds one (stuck on the socket) and the queue holds 4
        assert not server.net.send(slow.address, b"more")

        assert server.net.broadcast(b"hello") == 1  # the fast peer takes it, the slow one is full
        assert server.net.send(fast.address, b"and more")
        assert await receive(peer, 2) == [(hub.address, b"hello"), (hub.address, b"and more")]
        await conn.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_send_to_unknown_or_disconnected_peer_returns_false() -> None:
    (key,) = keys_ordered(1)
    inbound_send, _ = trio.open_memory_channel[Inbound](1)
    net = PeerNetwork(
        identity=key,
        chain_id=CHAIN,
        genesis_hash=GENESIS,
        listen_host=HOST,
        listen_port=0,
        peers={},
        allowed=allowlist(key),
        inbound=inbound_send,
        max_frame_size=10,
    )
    assert net.send(Address(b"\x01" * 20), b"x") is False
    assert net.broadcast(b"x") == 0
    assert net.connected() == frozenset()
    with pytest.raises(ValueError, match="max_frame_size"):
        net.send(Address(b"\x01" * 20), b"x" * 11)


def test_configuration_errors() -> None:
    low, high = keys_ordered(2)
    inbound_send, _ = trio.open_memory_channel[Inbound](1)
    base: dict[str, Any] = {
        "identity": low,
        "chain_id": CHAIN,
        "genesis_hash": GENESIS,
        "listen_host": HOST,
        "listen_port": 0,
        "peers": {},
        "allowed": allowlist(low, high),
        "inbound": inbound_send,
    }
    with pytest.raises(ValueError, match="not in the allowlist"):
        PeerNetwork(**{**base, "peers": {high.address: (HOST, 1)}, "allowed": allowlist(low)})
    with pytest.raises(ValueError, match="genesis_hash"):
        PeerNetwork(**{**base, "genesis_hash": b"short"})
    with pytest.raises(ValueError, match="not the address"):
        PeerNetwork(**{**base, "allowed": {high.address: (low.scheme_tag, low.public_key)}})
    with pytest.raises(ValueError, match="backoff"):
        PeerNetwork(**{**base, "backoff_initial": 1.0, "backoff_max": 0.5})
    with pytest.raises(ValueError, match="send_queue_size"):
        PeerNetwork(**{**base, "send_queue_size": 0})
    # A peer with a lower id is not dialed, so it needs no check (it dials us).
    PeerNetwork(**{**base, "identity": high, "peers": {low.address: (HOST, 1)}})


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    for failures in range(20):
        base = min(5.0, 0.05 * 2**failures)
        delays = [backoff_delay(failures, 0.05, 5.0, rng) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff_delay(10**6, 0.05, 5.0, rng) <= 5.0  # no overflow however long the outage
    assert backoff_delay(3, 0.05, 5.0, random.Random(1)) == backoff_delay(3, 0.05, 5.0, random.Random(1))


async def test_disconnect_closes_a_misbehaving_peer_and_it_comes_back_later() -> None:
    async with trio.open_nursery() as nursery:
        a, b = await start_cluster(nursery, keys_ordered(2))
        await wait_fully_connected([a, b])
        assert a.net.disconnect(b.id, "served a bad block") is True
        await wait_until(lambda: b.id not in a.net.connected(), "the peer is disconnected")
        assert a.net.disconnect(b.id, "again") is False or b.id in a.net.connected()
        await wait_fully_connected([a, b])  # it redials after the protocol-failure backoff
        assert a.net.send(b.id, b"hello") is True
        assert await receive(b, 1) == [(a.id, b"hello")]
        nursery.cancel_scope.cancel()
