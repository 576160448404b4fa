"""The validator network on Trio: authenticated, encrypted, length-prefixed TCP connections.

One ``PeerNetwork`` per node. It listens for the peers whose node id is lower than ours and dials the
ones whose node id is higher (bytes comparison), so each pair of validators shares exactly one TCP
connection. Every connection starts with the ``p2p.handshake`` mutual authentication and hybrid key
agreement (under a timeout), then carries ``p2p.framing`` frames whose payloads are sealed by the
``p2p.session.SecureSession`` the handshake produced: payloads received are opened and go to the
``inbound`` channel as ``(node_id, plaintext)``, payloads sent go through a bounded per-peer queue
drained by that peer's own writer task (which seals them), so one slow peer never holds up the others.
Each queue has two lanes: ``urgent`` (consensus, the default) and ``bulk`` (``bulk=True``: transaction
gossip), each with its own bounds, so queued gossip never makes a consensus send fail. The writer
always drains the urgent lane first, so a vote never waits behind megabytes of gossip (CometBFT's
MConnection gives each channel its own send queue and a priority for the same reasons).
The public API (``send``, ``broadcast``, ``inbound``) carries plaintext only.

Limits (constructor arguments): handshake timeout; frame size checked from the 4-byte header before
the body is buffered (``max_frame_size`` + the 16-byte tag after the handshake,
``MAX_HANDSHAKE_MESSAGE`` during it); inbound connections still in the handshake, in all and per
remote IP, and connection attempts per remote IP per window (all refused at accept, before a byte is
read); authenticated inbound connections (counted apart, so connections still in the handshake never
take a listed peer's slot); per-peer send lanes, each bounded in payloads
and bytes (``send`` returns False when the lane is full, never blocks; counted in ``counters``); a
per-peer inbound byte rate (a token bucket: an over-fast peer is read more slowly, and TCP flow
control pushes back on it; nothing is dropped).

Traffic counters (``TrafficCounters``, for the node's metrics): bytes on the wire each way, sends
refused per lane, reads paused by the rate limit.

Peer scoring (``p2p.limits.PeerScores``): a peer whose frame fails to decrypt or is oversize loses
``PENALTY_BAD_FRAME`` points (and the connection), one the node reports through ``penalize`` loses
the points given; the score recovers with time, and at the threshold the peer is disconnected and
banned: its handshakes are refused and it is not dialed until the ban ends. Only authenticated peers
are scored: a failed handshake proves nothing about the key it presented.

Failure handling: anything a peer does wrong (bad frame, oversize frame, failed handshake, reset) is
logged on the ``qenex.p2p`` logger and closes that one connection; the dialer then retries with
exponential backoff and jitter (``backoff_delay``). An inbound connection from a peer that is already
connected replaces the old connection (the peer restarted and we have not noticed yet).

Task tree (structured concurrency: every task has an owner; cancelling ``run`` stops them all)::

    PeerNetwork.run
    └── nursery
        ├── _pump_events                        only with peer_events: forwards events in order
        ├── trio.serve_listeners                accept loop (handler_nursery = this nursery)
        ├── _handle_inbound(stream)  × accepted  limits, handshake as responder, then _serve
        │   └── _serve(conn): connection nursery, inside conn.cancel_scope
        │       ├── _write_loop(conn)            send queue -> seal -> socket
        │       └── _read_loop(conn) (inline)    socket (rate-limited) -> open -> inbound channel
        └── _dial_loop(peer)  × peer with a higher node id
            └── connect, handshake as initiator, _serve(conn) as above; back off; repeat

Model: ethereum/ddht ``v5_1/client.py`` (a tree of Trio services joined by memory channels) and
CometBFT's ``p2p/switch.go`` (persistent peers redialled with backoff and jitter; one connection per
peer id).
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal

import trio

from crypto.keys import Address, KeyPair, address_of
from p2p.exceptions import (
    ConnectionFailed,
    HandshakeFailed,
    P2PError,
    RemoteProtocolError,
    SessionClosed,
    SessionExhausted,
)
from p2p.framing import DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT, FrameDecoder, encode_frame
from p2p.handshake import MAX_HANDSHAKE_MESSAGE, Handshake, Role
from p2p.limits import PENALTY_BAD_FRAME, PENALTY_BAD_MESSAGE, AttemptLimiter, PeerScores, TokenBucket
from p2p.session import MAX_REKEY_INTERVAL, REKEY_INTERVAL, TAG_LEN, SecureSession

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


@dataclass(slots=True)
class TrafficCounters:
    """Running totals of one node's P2P traffic: the source of its Prometheus counters.

    A node passes the same object to each ``PeerNetwork`` it creates (``counters=``), so the totals
    keep growing across restarts of the network, as Prometheus counters must. Only the Trio thread
    that runs the network writes them.

    Attributes:
        wire_bytes_sent: bytes written to peers' sockets, as they go on the wire: handshake frames, and
            after the handshake each payload sealed (+16-byte tag) and framed (+4-byte length header).
        wire_bytes_received: bytes read from peers' sockets, likewise (connections refused in the
            handshake included).
        refused_urgent: payloads ``send``/``broadcast`` refused (one per peer) because that peer's
            urgent (consensus) lane was full.
        refused_bulk: payloads refused because that peer's bulk (gossip) lane was full.
        throttled_reads: times reading from a peer paused because it exceeded its inbound byte rate.
    """

    wire_bytes_sent: int = 0
    wire_bytes_received: int = 0
    refused_urgent: int = 0
    refused_bulk: int = 0
    throttled_reads: int = 0


def _name(node_id: bytes) -> str:
    return "0x" + bytes(node_id).hex()


def _remote(stream: trio.abc.Stream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, TypeError):
        return "?"
    return f"{host}:{port}"


def _remote_ip(stream: trio.abc.Stream) -> str:
    try:
        return str(stream.socket.getpeername()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, TypeError, IndexError):
        return "?"


async def _send_all(stream: trio.abc.Stream, data: bytes, counters: TrafficCounters) -> None:
    """``stream.send_all`` with its I/O errors translated to ``ConnectionFailed``; counts the bytes sent."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, OSError) as err:
        raise ConnectionFailed(f"write failed: {err!r}") from err
    counters.wire_bytes_sent += len(data)


async def _read_frame(
    stream: trio.abc.Stream, decoder: FrameDecoder, counters: TrafficCounters, bucket: TokenBucket | None = None
) -> bytes:
    """Return the next frame payload. Raises ``ConnectionFailed``, ``FrameTooLarge``.

    Every chunk read is counted in ``counters.wire_bytes_received``. With a ``bucket``, every chunk
    is charged to it and the next read waits for the delay it returns (the inbound byte rate limit;
    each such wait counts in ``counters.throttled_reads``).
    """
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
        counters.wire_bytes_received += len(data)
        decoder.receive_data(data)
        if bucket is not None:
            delay = bucket.charge(len(data), trio.current_time())
            if delay > 0:
                counters.throttled_reads += 1
                await trio.sleep(delay)


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
    """An authenticated connection: stream, decoder, session, send queue, rate bucket, cancel scope."""

    def __init__(
        self,
        peer_id: Address,
        stream: trio.abc.Stream,
        decoder: FrameDecoder,
        session: SecureSession,
        direction: str,
        queue_size: int,
        bucket: TokenBucket,
    ) -> None:
        self.peer_id = peer_id
        self.stream = stream
        self.decoder = decoder
        self.session = session
        self.direction = direction
        self.remote = _remote(stream)
        self.queue_size = queue_size
        self.urgent: deque[bytes] = deque()  # consensus and sync payloads: written first
        self.bulk: deque[bytes] = deque()  # transaction gossip: written when no urgent payload waits
        self.urgent_bytes = 0  # payload bytes in each lane
        self.bulk_bytes = 0
        self.wake = trio.Event()  # set when a payload is queued
        self.bucket = bucket
        self.cancel_scope = trio.CancelScope()
        self.protocol_error = False

    def __str__(self) -> str:
        return f"peer {_name(self.peer_id)} ({self.direction}, {self.remote})"


class PeerNetwork:
    """Authenticated, encrypted TCP connections to the other validators, with per-peer send queues.

    Sending (``send``, ``broadcast``) is non-blocking and must be called from the Trio thread that
    runs ``run``; receiving is the ``inbound`` channel. Messages to one peer arrive in the order sent
    while its connection lasts; a message queued when a connection breaks is lost (the layer above
    retransmits what it needs, as PBFT does). Nothing a peer sends is ever dropped on the way in: a
    fast peer is read more slowly (the inbound rate limit), a slow ``inbound`` reader slows every peer
    down through TCP.

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
        send_queue_bytes: int = 64 * 1024 * 1024,
        bulk_queue_size: int = 1024,
        bulk_queue_bytes: int = 8 * 1024 * 1024,
        handshake_timeout: float = 5.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        max_inbound_connections: int = 64,
        max_pending_handshakes: int = 16,
        max_pending_per_ip: int = 4,
        max_attempts_per_ip: int = 30,
        attempt_window: float = 10.0,
        inbound_bytes_per_second: float = 64 * 1024 * 1024,
        inbound_burst_bytes: int = 16 * 1024 * 1024,
        ban_threshold: float = -100.0,
        ban_seconds: float = 60.0,
        score_recovery: float = 5.0,
        rekey_interval: int = REKEY_INTERVAL,
        rng: random.Random | None = None,
        counters: TrafficCounters | None = None,
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
            max_frame_size: largest payload (plaintext message) sent or received, in bytes, at most
                ``2**32 - 17``; the sealed frame is 16 bytes longer (handshake messages are limited to
                ``MAX_HANDSHAKE_MESSAGE`` whatever this is).
            send_queue_size: urgent (consensus) payloads queued per peer before ``send`` returns False.
            send_queue_bytes: urgent payload bytes queued per peer before ``send`` returns False (a
                payload is always accepted into an empty lane, so one of ``max_frame_size`` always
                fits).
            bulk_queue_size: ``bulk`` payloads (gossip) queued per peer before ``send(bulk=True)``
                returns False. The bulk lane's bounds are separate from the urgent lane's: a full
                bulk lane never refuses an urgent payload.
            bulk_queue_bytes: ``bulk`` payload bytes queued per peer at most (empty lane as above).
            handshake_timeout: seconds allowed to open a connection, and again to complete the
                handshake; a connection whose handshake is not done by then is closed (an
                authenticated connection has no idle timeout: it stays open while quiet).
            backoff_initial: seconds, first redial delay (see ``backoff_delay``).
            backoff_max: seconds, cap of the redial delay.
            max_inbound_connections: authenticated inbound connections open at once; a peer that
                completes its handshake beyond that is closed (one replacing its own connection is
                always taken). Connections still in the handshake do not count here: they have
                their own, smaller caps, so they can never hold a listed peer's slot.
            max_pending_handshakes: inbound connections in the handshake at once; more are closed
                at accept, before a byte is read.
            max_pending_per_ip: inbound connections in the handshake at once from one remote IP;
                more are closed at accept, before a byte is read.
            max_attempts_per_ip: inbound connection attempts allowed per remote IP within
                ``attempt_window``; more are closed at accept, before a byte is read.
            attempt_window: seconds, the sliding window of ``max_attempts_per_ip``.
            inbound_bytes_per_second: long-run rate at which one peer's bytes are read, bytes/s.
            inbound_burst_bytes: bytes one peer may send at once above that rate (bucket size).
            ban_threshold: score (negative) at or below which a peer is disconnected and banned.
            ban_seconds: seconds a banned peer is refused and not dialed.
            score_recovery: points per second by which a lowered score rises back toward 0.
            rekey_interval: frames per session key (``p2p.session``); a protocol constant that every
                node must share (the handshake refuses a peer with another value): change it only in
                tests.
            rng: source of backoff jitter (a seeded ``random.Random`` replays a run); default fresh.
            counters: where to count traffic (``TrafficCounters``; the ``counters`` attribute);
                default a fresh one. A node passes one object to each network it creates.

        Raises:
            ValueError: a malformed setting: genesis hash not 32 bytes, an allowlist entry whose node
                id is not the address of its key, a peer to dial that is not in the allowlist, a
                non-positive queue size, timeout, backoff, limit, rate or ban setting, or a frame limit
                or rekey interval out of range.
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
        if not 0 <= max_frame_size <= MAX_FRAME_LIMIT - TAG_LEN:
            raise ValueError(f"max_frame_size must be in [0, {MAX_FRAME_LIMIT - TAG_LEN}]")
        if send_queue_size < 1 or send_queue_bytes < 1 or bulk_queue_size < 1 or bulk_queue_bytes < 1:
            raise ValueError(
                "send_queue_size, send_queue_bytes, bulk_queue_size and bulk_queue_bytes must be at least 1"
            )
        if not handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("backoff needs 0 < backoff_initial <= backoff_max")
        if max_inbound_connections < 1 or max_attempts_per_ip < 1 or not attempt_window > 0:
            raise ValueError("max_inbound_connections, max_attempts_per_ip and attempt_window must be positive")
        if max_pending_handshakes < 1 or max_pending_per_ip < 1:
            raise ValueError("max_pending_handshakes and max_pending_per_ip must be at least 1")
        if not (0 < inbound_bytes_per_second < math.inf and inbound_burst_bytes >= 1):
            raise ValueError("inbound_bytes_per_second and inbound_burst_bytes must be positive and finite")
        if not (ban_threshold < 0 and ban_seconds > 0 and score_recovery >= 0):
            raise ValueError("need ban_threshold < 0, ban_seconds > 0 and score_recovery >= 0")
        if type(rekey_interval) is not int or not 1 <= rekey_interval <= MAX_REKEY_INTERVAL:
            raise ValueError(f"rekey_interval must be an int in [1, {MAX_REKEY_INTERVAL}]")
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
        self._send_queue_bytes = send_queue_bytes
        self._bulk_queue_size = bulk_queue_size
        self._bulk_queue_bytes = bulk_queue_bytes
        self._handshake_timeout = handshake_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_inbound = max_inbound_connections
        self._max_pending = max_pending_handshakes
        self._max_pending_per_ip = max_pending_per_ip
        self._attempts_per_ip = max_attempts_per_ip
        self._attempt_window = attempt_window
        self._inbound_rate = float(inbound_bytes_per_second)
        self._inbound_burst = float(inbound_burst_bytes)
        self._ban_threshold = ban_threshold
        self._ban_seconds = ban_seconds
        self._score_recovery = score_recovery
        self._rekey_interval = rekey_interval
        # Scores and bans outlive a restart of ``run`` on this object; attempts do not need to.
        self._scores: PeerScores[Address] = PeerScores(
            threshold=ban_threshold, decay=score_recovery, ban_seconds=ban_seconds
        )
        self._attempts: AttemptLimiter[str] = AttemptLimiter(max_attempts_per_ip, attempt_window)
        self._inbound_open = 0  # authenticated inbound connections being served
        self._pending_open = 0  # inbound connections in the handshake
        self._pending_per_ip: dict[str, int] = {}  # the same, per remote IP (no entry at 0)
        self._rng = rng if rng is not None else random.Random()
        self.counters = counters if counters is not None else TrafficCounters()
        """This network's traffic totals (see ``TrafficCounters``)."""
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
        self._inbound_open = 0
        self._pending_open = 0
        self._pending_per_ip = {}
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

    def send(self, peer: Address, payload: bytes, *, bulk: bool = False) -> bool:
        """Queue ``payload`` for ``peer``; never blocks. ``bulk`` payloads (gossip) are written only
        when no urgent one waits, and go in a lane of their own (``bulk_queue_size``,
        ``bulk_queue_bytes``), so however much gossip waits, an urgent payload is still taken.

        Returns:
            True if queued; False if ``peer`` is not connected or the lane of its send queue that
            ``bulk`` selects is full (the payload is dropped: it is the caller's to retry or give up;
            a full lane counts in ``counters.refused_urgent`` / ``refused_bulk``).

        Raises:
            ValueError: ``payload`` is longer than ``max_frame_size`` (a local bug).
        """
        payload = self._check_payload(payload)
        conn = self._connections.get(peer)
        return conn is not None and self._enqueue(conn, payload, bulk)

    def broadcast(self, payload: bytes, *, bulk: bool = False) -> int:
        """Queue ``payload`` for every connected peer; never blocks (``bulk`` as for ``send``).

        Returns:
            How many peers accepted it (see ``send``).

        Raises:
            ValueError: ``payload`` is longer than ``max_frame_size`` (a local bug).
        """
        payload = self._check_payload(payload)
        return sum(self._enqueue(conn, payload, bulk) for conn in list(self._connections.values()))

    def connected(self) -> frozenset[Address]:
        """The node ids of the peers connected and authenticated right now."""
        return frozenset(self._connections)

    def peer_info(self) -> list[tuple[Address, str, str]]:
        """``(node id, remote "host:port", "inbound" or "outbound")`` of each connected peer, by node id."""
        return sorted((peer, conn.remote, conn.direction) for peer, conn in self._connections.items())

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

    def penalize(self, peer: Address, reason: str, points: float = PENALTY_BAD_MESSAGE) -> bool:
        """Report that ``peer`` sent a bad message (undecodable, invalid, forged): lower its score.

        Call it from the Trio thread that runs ``run``, for a message that came from ``peer`` over
        this network (so the peer is authenticated). The score recovers by ``score_recovery`` points
        per second; when it reaches ``ban_threshold`` the peer is disconnected and banned for
        ``ban_seconds``: its handshakes are refused and it is not dialed. The network itself
        penalizes frames that fail to decrypt or are oversize (``PENALTY_BAD_FRAME``).

        Args:
            peer: the node id the message came from.
            reason: what was wrong, for the log.
            points: score to take away, >= 0 (``PENALTY_BAD_MESSAGE`` = 10 by default).

        Returns:
            True if this penalty banned the peer.

        Raises:
            ValueError: ``points`` is negative or not finite (a local bug).
        """
        now = trio.current_time()
        banned = self._scores.penalize(Address(bytes(peer)), points, now)
        if not banned:
            self._log.debug(
                "peer %s penalized by %g (%s): score %.1f", _name(peer), points, reason, self._scores.score(peer, now)
            )
            return False
        self._log.warning(
            "banning peer %s for %g s: score fell to %g or below (last: %s)",
            _name(peer),
            self._ban_seconds,
            self._ban_threshold,
            reason,
        )
        conn = self._connections.get(Address(bytes(peer)))
        if conn is not None:
            conn.protocol_error = True
            conn.cancel_scope.cancel()
        return True

    def banned(self) -> dict[Address, float]:
        """Peers banned right now -> seconds until their ban ends."""
        now = trio.current_time()
        return {peer: until - now for peer, until in self._scores.bans(now).items()}

    def score(self, peer: Address) -> float:
        """The peer's current score: 0 is neutral, ``ban_threshold`` or below means banned."""
        return self._scores.score(Address(bytes(peer)), trio.current_time())

    # -- sending ----------------------------------------------------------------------------------

    def _check_payload(self, payload: bytes) -> bytes:
        payload = bytes(payload)
        if len(payload) > self._max_frame_size:
            raise ValueError(f"payload of {len(payload)} bytes is over max_frame_size={self._max_frame_size}")
        return payload

    def _enqueue(self, conn: _Connection, payload: bytes, bulk: bool = False) -> bool:
        """Queue ``payload`` in the lane of ``conn`` that ``bulk`` selects; False if that lane is full.

        Each lane is bounded on its own (urgent: ``send_queue_size`` payloads, ``send_queue_bytes``;
        bulk: ``bulk_queue_size``, ``bulk_queue_bytes``), so a bulk lane full of gossip never refuses
        a consensus message. A refusal counts in ``counters.refused_urgent`` / ``refused_bulk``.
        """
        if bulk:
            lane, queued, most, most_bytes = conn.bulk, conn.bulk_bytes, self._bulk_queue_size, self._bulk_queue_bytes
        else:
            lane, queued, most, most_bytes = conn.urgent, conn.urgent_bytes, conn.queue_size, self._send_queue_bytes
        if len(lane) >= most or (queued and queued + len(payload) > most_bytes):
            if bulk:
                self.counters.refused_bulk += 1
            else:
                self.counters.refused_urgent += 1
            self._log.debug(
                "%s lane of %s is full (%d payloads, %d bytes); payload dropped",
                "bulk" if bulk else "urgent",
                conn,
                len(lane),
                queued,
            )
            return False
        lane.append(payload)
        if bulk:
            conn.bulk_bytes += len(payload)
        else:
            conn.urgent_bytes += len(payload)
        conn.wake.set()
        return True

    # -- connection table and events --------------------------------------------------------------

    def _register(self, conn: _Connection) -> None:
        old = self._connections.get(conn.peer_id)
        if old is not None:
            self._log.info("%s replaces the connection %s", conn, old.remote)
            old.cancel_scope.cancel()
            self._emit("disconnected", conn.peer_id)
        self._connections[conn.peer_id] = conn
        self._log.info("connected to %s", conn, extra={"peer": "0x" + conn.peer_id.hex(), "direction": conn.direction,
                                                      "remote": conn.remote})
        self._emit("connected", conn.peer_id)

    def _unregister(self, conn: _Connection) -> None:
        if self._connections.get(conn.peer_id) is conn:
            del self._connections[conn.peer_id]
            self._log.info("disconnected from %s", conn, extra={"peer": "0x" + conn.peer_id.hex()})
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
        """Authenticate the peer on ``stream`` and agree on session keys within ``handshake_timeout``.

        Returns the finished handshake (``hs.session`` seals and opens what follows) and the decoder
        holding any bytes already received after it. Raises ``HandshakeFailed`` (also on timeout;
        ``PeerNotAllowed`` for an unlisted or banned key), ``FrameTooLarge``, ``ConnectionFailed``.
        """
        now = trio.current_time()
        refused = {peer: f"banned for another {until - now:.1f} s" for peer, until in self._scores.bans(now).items()}
        hs = Handshake(
            self._identity,
            role,
            self._chain_id,
            self._genesis_hash,
            self._allowed,
            expected_peer=expected_peer,
            refused=refused,
            rekey_interval=self._rekey_interval,
            max_message=self._max_frame_size,
        )
        decoder = FrameDecoder(MAX_HANDSHAKE_MESSAGE)
        with trio.move_on_after(self._handshake_timeout) as scope:
            outgoing = hs.start()
            while True:
                if outgoing:  # the responder's Hello and Auth go out in one write
                    await _send_all(
                        stream, b"".join(encode_frame(m, MAX_HANDSHAKE_MESSAGE) for m in outgoing), self.counters
                    )
                if hs.is_done:
                    break
                outgoing = hs.receive(await _read_frame(stream, decoder, self.counters))
        if scope.cancelled_caught:
            raise HandshakeFailed(f"handshake not completed within {self._handshake_timeout} s")
        decoder.max_size = hs.session.max_frame  # from the next frame on, the session's limit
        return hs, decoder

    def _connection(self, hs: Handshake, stream: trio.abc.Stream, decoder: FrameDecoder, direction: str) -> _Connection:
        bucket = TokenBucket(self._inbound_rate, self._inbound_burst, trio.current_time())
        return _Connection(hs.peer_id, stream, decoder, hs.session, direction, self._send_queue_size, bucket)

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection: admission limits, handshake as responder, direction, serve.

        Admission happens twice. At accept, before a byte is read: the caps on connections in the
        handshake (``max_pending_handshakes`` in all, ``max_pending_per_ip`` from one IP) and the
        attempts per IP. After the handshake: ``max_inbound_connections`` counts only authenticated
        connections, so half-open handshakes from a few addresses can delay a listed peer at most
        until one of them times out, never take its slot.
        """
        remote = _remote(stream)
        ip = _remote_ip(stream)
        try:
            if self._pending_open >= self._max_pending:
                self._log.info(
                    "inbound connection from %s refused: %d connections in the handshake already",
                    remote,
                    self._max_pending,
                )
                return
            if self._pending_per_ip.get(ip, 0) >= self._max_pending_per_ip:
                self._log.info(
                    "inbound connection from %s refused: %d connections from that IP in the handshake already",
                    remote,
                    self._max_pending_per_ip,
                )
                return
            if not self._attempts.allow(ip, trio.current_time()):
                self._log.debug(
                    "inbound connection from %s refused: over %d attempts in %g s",
                    remote,
                    self._attempts_per_ip,
                    self._attempt_window,
                )
                return
            self._pending_open += 1
            self._pending_per_ip[ip] = self._pending_per_ip.get(ip, 0) + 1
            try:
                hs, decoder = await self._handshake(stream, Role.RESPONDER, None)
            except P2PError as err:
                self._log.failure(f"inbound connection from {remote} refused", err)
                return
            finally:
                self._pending_open -= 1
                left = self._pending_per_ip.pop(ip) - 1
                if left:
                    self._pending_per_ip[ip] = left
            peer_id = hs.peer_id
            if peer_id > self._id:
                self._log.warning(
                    "inbound connection from %s (%s) refused: its node id is greater than ours, so we dial it",
                    _name(peer_id),
                    remote,
                )
                return
            if self._inbound_open >= self._max_inbound and peer_id not in self._connections:
                self._log.warning(
                    "inbound connection from %s (%s) refused: %d authenticated connections open already",
                    _name(peer_id),
                    remote,
                    self._max_inbound,
                )
                return
            self._inbound_open += 1
            try:
                await self._serve(self._connection(hs, stream, decoder, "inbound"))
            finally:
                self._inbound_open -= 1
        finally:
            await trio.aclose_forcefully(stream)

    async def _dial_loop(self, peer_id: Address, host: str, port: int) -> None:
        """Keep one outbound connection to ``peer_id`` alive: dial, serve, back off, repeat."""
        failures = 0
        while True:
            until = self._scores.banned_until(peer_id, trio.current_time())
            if until is not None:
                self._log.info("not dialing banned peer %s for %.1f s", _name(peer_id), until - trio.current_time())
                await trio.sleep_until(until)
                continue
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
                conn = self._connection(hs, stream, decoder, "outbound")
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
        """Open frames from the peer and deliver them to ``inbound`` until the connection ends.

        A frame that is oversize or fails to open (altered, replayed, reordered, dropped, truncated)
        ends the connection, costs the peer ``PENALTY_BAD_FRAME`` points, and nothing of it or after
        it is delivered.
        """
        try:
            while True:
                sealed = await _read_frame(conn.stream, conn.decoder, self.counters, conn.bucket)
                payload = conn.session.open(sealed)
                await self._inbound.send((conn.peer_id, payload))
        except P2PError as err:
            conn.protocol_error = isinstance(err, RemoteProtocolError)
            self._log.failure(f"{conn} closed", err)
            if conn.protocol_error:
                self.penalize(conn.peer_id, f"{type(err).__name__}: {err}", PENALTY_BAD_FRAME)
        finally:
            conn.cancel_scope.cancel()

    @staticmethod
    def _take(conn: _Connection) -> bytes:
        """Seal the next queued payload (urgent lane first) and frame it."""
        if conn.urgent:
            payload = conn.urgent.popleft()
            conn.urgent_bytes -= len(payload)
        else:
            payload = conn.bulk.popleft()
            conn.bulk_bytes -= len(payload)
        return encode_frame(conn.session.seal(payload), conn.session.max_frame)

    async def _write_loop(self, conn: _Connection) -> None:
        """Seal queued payloads and write them, several frames per write when they are waiting;
        urgent payloads queued during a write go out before any further bulk one."""
        try:
            while True:
                if not conn.urgent and not conn.bulk:
                    conn.wake = trio.Event()
                    await conn.wake.wait()
                # the reader may have failed the session and cancelled the connection while this task
                # was already scheduled to run again: a cancel is only delivered at a checkpoint
                await trio.lowlevel.checkpoint_if_cancelled()
                if conn.session.failed:
                    return
                frames = [self._take(conn)]
                size = len(frames[0])
                while size < WRITE_BATCH and (conn.urgent or conn.bulk):
                    frames.append(self._take(conn))
                    size += len(frames[-1])
                await _send_all(conn.stream, b"".join(frames), self.counters)
        except (ConnectionFailed, SessionExhausted, SessionClosed) as err:
            self._log.failure(f"{conn} closed", err)
        finally:
            conn.cancel_scope.cancel()
