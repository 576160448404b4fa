"""The validator network on Trio: authenticated, length-prefixed TCP connections between nodes.

One ``PeerNetwork`` per node. It listens for the peers whose node id is lower than ours and dials the
ones whose node id is higher (bytes comparison), so each pair of validators shares exactly one TCP
connection. Every connection starts with the ``p2p.handshake`` mutual authentication (under a
timeout), then carries ``p2p.framing`` frames: payloads received go to the ``inbound`` channel as
``(node_id, payload)``, payloads sent go through a bounded per-peer queue drained by that peer's own
writer task, so one slow peer never holds up the others.

Failure handling: anything a peer does wrong (bad frame, oversize frame, failed handshake, reset) is
logged on the ``qenex.p2p`` logger and closes that one connection; the dialer then retries with
exponential backoff and jitter (``backoff_delay``). An inbound connection from a peer that is already
connected replaces the old connection (the peer restarted and we have not noticed yet).

Task tree (structured concurrency: every task has an owner; cancelling ``run`` stops them all)::

    PeerNetwork.run
    └── nursery
        ├── _pump_events                        only with peer_events: forwards events in order
        ├── trio.serve_listeners                accept loop (handler_nursery = this nursery)
        ├── _handle_inbound(stream)  × accepted  handshake as responder, then _serve
        │   └── _serve(conn): connection nursery, inside conn.cancel_scope
        │       ├── _write_loop(conn)            send queue -> socket
        │       └── _read_loop(conn) (inline)    socket -> inbound channel
        └── _dial_loop(peer)  × peer with a higher node id
            └── connect, handshake as initiator, _serve(conn) as above; back off; repeat

Model: ethereum/ddht ``v5_1/client.py`` (a tree of Trio services joined by memory channels) and
CometBFT's ``p2p/switch.go`` (persistent peers redialled with backoff and jitter; one connection per
peer id).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Mapping
from functools import partial
from typing import Any, Final, Literal

import trio

from crypto.keys import Address, KeyPair, address_of
from p2p.exceptions import ConnectionFailed, HandshakeFailed, P2PError, RemoteProtocolError
from p2p.framing import DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT, FrameDecoder, encode_frame
from p2p.handshake import MAX_HANDSHAKE_MESSAGE, Handshake, Role

logger = logging.getLogger("qenex.p2p")

PeerEvent = tuple[Literal["connected", "disconnected"], Address]
"""What ``peer_events`` carries: ``("connected" | "disconnected", node_id)``."""

RECEIVE_CHUNK: Final = 64 * 1024
"""Bytes asked of the socket per read."""

WRITE_BATCH: Final = 256 * 1024
"""A writer joins queued frames into one socket write up to about this many bytes."""

MAX_PENDING_EVENTS: Final = 4096
"""Peer events held for a slow ``peer_events`` reader; beyond this the oldest are dropped (logged)."""


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before the next dial after ``failures`` failures in a row ("equal jitter").

    ``base = min(maximum, initial * 2**failures)``; the delay is uniform in ``[base / 2, base]``, so
    it grows from ``initial`` to ``maximum`` and nodes that lost a peer together do not redial in
    lockstep. Source: AWS Architecture Blog, "Exponential Backoff and Jitter" (2015). CometBFT's
    ``p2p/switch.go`` ``reconnectToPeer`` redials persistent peers at fixed intervals and then with
    exponential backoff, both with random jitter; we skip the fixed-interval phase.
    """
    base = min(maximum, initial * 2.0 ** min(max(failures, 0), 64))
    return rng.uniform(base / 2, base)


def _name(node_id: bytes) -> str:
    return "0x" + bytes(node_id).hex()


def _remote(stream: trio.abc.Stream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, TypeError):
        return "?"
    return f"{host}:{port}"


async def _send_all(stream: trio.abc.Stream, data: bytes) -> None:
    """``stream.send_all`` with its I/O errors translated to ``ConnectionFailed``."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, OSError) as err:
        raise ConnectionFailed(f"write failed: {err!r}") from err


async def _read_frame(stream: trio.abc.Stream, decoder: FrameDecoder) -> bytes:
    """Return the next frame payload. Raises ``ConnectionFailed``, ``FrameTooLarge``."""
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        try:
            data = await stream.receive_some(RECEIVE_CHUNK)
        except (trio.BrokenResourceError, OSError) as err:
            raise ConnectionFailed(f"read failed: {err!r}") from err
        if not data:
            partial_frame = f" in the middle of a frame ({decoder.buffered} bytes)" if decoder.buffered else ""
            raise ConnectionFailed(f"peer closed the connection{partial_frame}")
        decoder.receive_data(data)


class _NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every record with the local node id, for logs of several nodes in one process."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['node'] if self.extra else '?'}] {msg}", kwargs

    def failure(self, what: str, err: P2PError) -> None:
        """Log why a connection ended or was refused: a peer's protocol error as a warning."""
        if isinstance(err, RemoteProtocolError):
            self.warning("%s: %s: %s", what, type(err).__name__, err)
        else:
            self.info("%s: %s", what, err)


class _Connection:
    """An authenticated connection: its stream, decoder, send queue and cancel scope."""

    def __init__(
        self,
        peer_id: Address,
        stream: trio.abc.Stream,
        decoder: FrameDecoder,
        direction: str,
        queue_size: int,
    ) -> None:
        self.peer_id = peer_id
        self.stream = stream
        self.decoder = decoder
        self.direction = direction
        self.remote = _remote(stream)
        self.queue_send, self.queue_receive = trio.open_memory_channel[bytes](queue_size)
        self.cancel_scope = trio.CancelScope()
        self.protocol_error = False

    def __str__(self) -> str:
        return f"peer {_name(self.peer_id)} ({self.direction}, {self.remote})"


class PeerNetwork:
    """Authenticated TCP connections to the other validators, with per-peer send queues.

    Sending (``send``, ``broadcast``) is non-blocking and must be called from the Trio thread that
    runs ``run``; receiving is the ``inbound`` channel. Messages to one peer arrive in the order sent
    while its connection lasts; a message queued when a connection breaks is lost (the layer above
    retransmits what it needs, as PBFT does).

    The channels belong to the caller: ``run`` never closes them, so a network can be stopped and a
    new one started on the same channels (a node restart). Closing the ``inbound`` receiver while
    ``run`` is running is a local bug: ``run`` raises (``trio.BrokenResourceError`` in a group).
    """

    def __init__(
        self,
        *,
        identity: KeyPair,
        chain_id: str,
        genesis_hash: bytes,
        listen_host: str,
        listen_port: int,
        peers: Mapping[Address, tuple[str, int]],
        allowed: Mapping[Address, tuple[int, bytes]],
        inbound: trio.MemorySendChannel[tuple[Address, bytes]],
        peer_events: trio.MemorySendChannel[PeerEvent] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME,
        send_queue_size: int = 1024,
        handshake_timeout: float = 5.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        """Configure the network; nothing happens until ``run``.

        Args:
            identity: this node's key pair; its address is our node id.
            chain_id: the chain id every peer must present in the handshake.
            genesis_hash: the 32-byte genesis hash every peer must present.
            listen_host: address to listen on (``"127.0.0.1"``, ``"0.0.0.0"``, ...).
            listen_port: TCP port to listen on; 0 picks a free one (``run`` reports it).
            peers: node id -> ``(host, port)``; only those with a node id greater than ours are dialed,
                the others are expected to dial us. Our own id is ignored.
            allowed: the allowlist, node id -> ``(scheme_tag, public_key)``: only these nodes may
                connect (the validator set from genesis).
            inbound: where ``(node_id, payload)`` of every frame received goes (awaited: a slow reader
                slows the peers down through TCP, it loses nothing).
            peer_events: optional; receives ``("connected", node_id)`` / ``("disconnected", node_id)``
                in the order the connection table changes (a replaced connection gives a
                ``disconnected`` then a ``connected``). ``connected()`` is always the truth: events
                still pending when ``run`` ends are not delivered, and if more than
                ``MAX_PENDING_EVENTS`` wait for a slow reader the oldest are dropped (logged).
            max_frame_size: largest payload sent or received, in bytes (handshake messages are
                limited to ``MAX_HANDSHAKE_MESSAGE`` whatever this is).
            send_queue_size: payloads queued per peer before ``send`` returns False.
            handshake_timeout: seconds allowed to open a connection, and again to complete the
                handshake.
            backoff_initial: seconds, first redial delay (see ``backoff_delay``).
            backoff_max: seconds, cap of the redial delay.
            rng: source of backoff jitter (a seeded ``random.Random`` replays a run); default fresh.

        Raises:
            ValueError: a malformed setting: genesis hash not 32 bytes, an allowlist entry whose node
                id is not the address of its key, a peer to dial that is not in the allowlist, a
                non-positive queue size, timeout or backoff, or a frame limit out of range.
        """
        if len(genesis_hash) != 32:
            raise ValueError("genesis_hash must be 32 bytes")
        for node_id, (scheme_tag, public_key) in allowed.items():
            if address_of(scheme_tag, bytes(public_key)) != node_id:
                raise ValueError(f"allowlist entry {_name(node_id)} is not the address of its key")
        me = identity.address
        dial = {Address(bytes(p)): (h, int(port)) for p, (h, port) in peers.items() if bytes(p) > me}
        missing = sorted(p for p in dial if p not in allowed)
        if missing:
            raise ValueError(f"peers to dial are not in the allowlist: {', '.join(map(_name, missing))}")
        if not 0 <= max_frame_size <= MAX_FRAME_LIMIT:
            raise ValueError(f"max_frame_size must be in [0, {MAX_FRAME_LIMIT}]")
        if send_queue_size < 1:
            raise ValueError("send_queue_size must be at least 1")
        if not handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("backoff needs 0 < backoff_initial <= backoff_max")
        self._identity = identity
        self._id = me
        self._chain_id = chain_id
        self._genesis_hash = bytes(genesis_hash)
        self._listen_host = listen_host
        self._listen_port = listen_port
        self._dial = dial
        self._allowed = {Address(bytes(k)): (int(t), bytes(pk)) for k, (t, pk) in allowed.items()}
        self._inbound = inbound
        self._peer_events = peer_events
        self._max_frame_size = max_frame_size
        self._send_queue_size = send_queue_size
        self._handshake_timeout = handshake_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()
        self._log = _NodeLog(logger, {"node": _name(me)[:18]})
        self._connections: dict[Address, _Connection] = {}
        self._events: deque[PeerEvent] = deque()
        self._events_wakeup = trio.Event()
        self._events_open = False
        self._running = False

    @property
    def node_id(self) -> Address:
        """Our node id (the 20-byte address of ``identity``)."""
        return self._id

    # -- public API -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, dial and serve until cancelled.

        Reports the port actually listened on through ``task_status.started(port)`` (use it with
        ``await nursery.start(network.run)`` when ``listen_port`` is 0; if ``listen_host`` resolves
        to several addresses, the port of the first listener).

        Raises:
            OSError: the listening socket cannot be opened (port in use, bad host).
            RuntimeError: ``run`` is already running on this object.
            trio.BrokenResourceError (in an exception group): the ``inbound`` receiver was closed.
            Nothing a peer sends makes ``run`` raise.
        """
        if self._running:
            raise RuntimeError("this PeerNetwork is already running")
        self._running = True
        self._connections = {}
        self._events = deque()
        self._events_wakeup = trio.Event()
        self._events_open = self._peer_events is not None
        try:
            listeners = await trio.open_tcp_listeners(self._listen_port, host=self._listen_host)
            port: int = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                if self._peer_events is not None:
                    nursery.start_soon(self._pump_events, self._peer_events)
                await nursery.start(
                    partial(trio.serve_listeners, self._handle_inbound, listeners, handler_nursery=nursery)
                )
                self._log.info("listening on %s:%d", self._listen_host, port)
                for peer_id, (host, peer_port) in sorted(self._dial.items()):
                    nursery.start_soon(self._dial_loop, peer_id, host, peer_port, name=f"dial {_name(peer_id)}")
                task_status.started(port)
        finally:
            self._running = False
            self._events_open = False
            self._connections = {}

    def send(self, peer: Address, payload: bytes) -> bool:
        """Queue ``payload`` for ``peer``; never blocks.

        Returns:
            True if queued; False if ``peer`` is not connected or its send queue is full (the payload
            is dropped: it is the caller's to retry or give up).

        Raises:
            ValueError: ``payload`` is longer than ``max_frame_size`` (a local bug).
        """
        payload = self._check_payload(payload)
        conn = self._connections.get(peer)
        return conn is not None and self._enqueue(conn, payload)

    def broadcast(self, payload: bytes) -> int:
        """Queue ``payload`` for every connected peer; never blocks.

        Returns:
            How many peers accepted it (see ``send``).

        Raises:
            ValueError: ``payload`` is longer than ``max_frame_size`` (a local bug).
        """
        payload = self._check_payload(payload)
        return sum(self._enqueue(conn, payload) for conn in list(self._connections.values()))

    def connected(self) -> frozenset[Address]:
        """The node ids of the peers connected and authenticated right now."""
        return frozenset(self._connections)

    def disconnect(self, peer: Address, reason: str) -> bool:
        """Close the connection to ``peer`` because it misbehaved (counted as a protocol failure, so
        redialling backs off). Returns whether there was a connection to close."""
        conn = self._connections.get(peer)
        if conn is None:
            return False
        self._log.warning("disconnecting %s: %s", conn, reason)
        conn.protocol_error = True
        conn.cancel_scope.cancel()
        return True

    # -- sending ----------------------------------------------------------------------------------

    def _check_payload(self, payload: bytes) -> bytes:
        payload = bytes(payload)
        if len(payload) > self._max_frame_size:
            raise ValueError(f"payload of {len(payload)} bytes is over max_frame_size={self._max_frame_size}")
        return payload

    def _enqueue(self, conn: _Connection, payload: bytes) -> bool:
        try:
            conn.queue_send.send_nowait(payload)
        except trio.WouldBlock:
            self._log.debug("send queue of %s is full; payload dropped", conn)
            return False
        return True

    # -- connection table and events --------------------------------------------------------------

    def _register(self, conn: _Connection) -> None:
        old = self._connections.get(conn.peer_id)
        if old is not None:
            self._log.info("%s replaces the connection %s", conn, old.remote)
            old.cancel_scope.cancel()
            self._emit("disconnected", conn.peer_id)
        self._connections[conn.peer_id] = conn
        self._log.info("connected to %s", conn)
        self._emit("connected", conn.peer_id)

    def _unregister(self, conn: _Connection) -> None:
        if self._connections.get(conn.peer_id) is conn:
            del self._connections[conn.peer_id]
            self._log.info("disconnected from %s", conn)
            self._emit("disconnected", conn.peer_id)

    def _emit(self, kind: Literal["connected", "disconnected"], peer_id: Address) -> None:
        if not self._events_open:
            return
        if len(self._events) >= MAX_PENDING_EVENTS:
            dropped = self._events.popleft()
            self._log.warning("peer_events reader is %d events behind; dropped %r", MAX_PENDING_EVENTS, dropped)
        self._events.append((kind, peer_id))
        self._events_wakeup.set()

    async def _pump_events(self, channel: trio.MemorySendChannel[PeerEvent]) -> None:
        """Forward queued peer events to ``channel`` in order (awaiting a slow reader)."""
        while True:
            await self._events_wakeup.wait()
            self._events_wakeup = trio.Event()
            while self._events:
                event = self._events.popleft()
                try:
                    await channel.send(event)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._log.info("peer_events channel is closed: no more peer events")
                    self._events_open = False
                    self._events.clear()
                    return

    # -- connections ------------------------------------------------------------------------------

    async def _handshake(
        self, stream: trio.abc.Stream, role: Role, expected_peer: Address | None
    ) -> tuple[Handshake, FrameDecoder]:
        """Authenticate the peer on ``stream`` within ``handshake_timeout``.

        Returns the finished handshake and the decoder holding any bytes already received after it.
        Raises ``HandshakeFailed`` (also on timeout), ``FrameTooLarge``, ``ConnectionFailed``.
        """
        hs = Handshake(
            self._identity, role, self._chain_id, self._genesis_hash, self._allowed, expected_peer=expected_peer
        )
        decoder = FrameDecoder(MAX_HANDSHAKE_MESSAGE)
        with trio.move_on_after(self._handshake_timeout) as scope:
            outgoing = hs.start()
            while True:
                if outgoing:  # the responder's Hello and Auth go out in one write
                    await _send_all(stream, b"".join(encode_frame(m, MAX_HANDSHAKE_MESSAGE) for m in outgoing))
                if hs.is_done:
                    break
                outgoing = hs.receive(await _read_frame(stream, decoder))
        if scope.cancelled_caught:
            raise HandshakeFailed(f"handshake not completed within {self._handshake_timeout} s")
        decoder.max_size = self._max_frame_size  # from the next frame on, the session's limit
        return hs, decoder

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection: handshake as responder, check direction, serve."""
        remote = _remote(stream)
        try:
            try:
                hs, decoder = await self._handshake(stream, Role.RESPONDER, None)
            except P2PError as err:
                self._log.failure(f"inbound connection from {remote} refused", err)
                return
            peer_id = hs.peer_id
            if peer_id > self._id:
                self._log.warning(
                    "inbound connection from %s (%s) refused: its node id is greater than ours, so we dial it",
                    _name(peer_id),
                    remote,
                )
                return
            await self._serve(_Connection(peer_id, stream, decoder, "inbound", self._send_queue_size))
        finally:
            await trio.aclose_forcefully(stream)

    async def _dial_loop(self, peer_id: Address, host: str, port: int) -> None:
        """Keep one outbound connection to ``peer_id`` alive: dial, serve, back off, repeat."""
        failures = 0
        while True:
            what = f"connection to {_name(peer_id)} at {host}:{port}"
            stream: trio.SocketStream | None = None
            try:
                with trio.move_on_after(self._handshake_timeout) as scope:
                    stream = await trio.open_tcp_stream(host, port)
                if stream is None or scope.cancelled_caught:
                    raise ConnectionFailed(f"connect not completed within {self._handshake_timeout} s")
                hs, decoder = await self._handshake(stream, Role.INITIATOR, peer_id)
            except OSError as err:
                self._log.failure(what, ConnectionFailed(f"connect failed: {err}"))
                failures += 1
            except P2PError as err:
                self._log.failure(what, err)
                failures += 1
            else:
                conn = _Connection(peer_id, stream, decoder, "outbound", self._send_queue_size)
                await self._serve(conn)
                failures = failures + 1 if conn.protocol_error else 0
            finally:
                if stream is not None:
                    await trio.aclose_forcefully(stream)
            delay = backoff_delay(failures, self._backoff_initial, self._backoff_max, self._rng)
            self._log.debug("redialing %s in %.3f s", _name(peer_id), delay)
            await trio.sleep(delay)

    async def _serve(self, conn: _Connection) -> None:
        """Run an authenticated connection until it breaks or is replaced. Raises nothing a peer causes."""
        self._register(conn)
        try:
            with conn.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, conn)
                    await self._read_loop(conn)
        finally:
            self._unregister(conn)

    async def _read_loop(self, conn: _Connection) -> None:
        """Deliver frames from the peer to ``inbound`` until the connection ends; then close it."""
        try:
            while True:
                payload = await _read_frame(conn.stream, conn.decoder)
                await self._inbound.send((conn.peer_id, payload))
        except P2PError as err:
            conn.protocol_error = isinstance(err, RemoteProtocolError)
            self._log.failure(f"{conn} closed", err)
        finally:
            conn.cancel_scope.cancel()

    async def _write_loop(self, conn: _Connection) -> None:
        """Write queued payloads to the peer, several frames per write when they are waiting."""
        try:
            while True:
                payload = await conn.queue_receive.receive()
                frames = [encode_frame(payload, self._max_frame_size)]
                size = len(frames[0])
                while size < WRITE_BATCH:
                    try:
                        payload = conn.queue_receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    frames.append(encode_frame(payload, self._max_frame_size))
                    size += len(frames[-1])
                await _send_all(conn.stream, b"".join(frames))
        except ConnectionFailed as err:
            self._log.failure(f"{conn} closed", err)
        finally:
            conn.cancel_scope.cancel()
