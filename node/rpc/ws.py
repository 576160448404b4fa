"""One WebSocket client of ``/ws``: JSON-RPC 2.0 requests and batches in, responses and pushes out.

Served through hypercorn's ASGI ``websocket`` scope (RFC 6455; hypercorn does the framing, pings and
close handshake). Per connection::

    WSConnection.run ─ nursery (cancelled when the client leaves or is cut off)
      ├── _reader       websocket.receive → one task per message (at most MAX_IN_FLIGHT at once)
      │     └── _handle   RPCApp.handle_body → response text → outbox (awaits: backpressure)
      └── _writer       outbox → websocket.send, in order

    Hub (node thread) ─ Subscription.push → deliver → outbox.send_nowait (never awaits)

The outbox is one bounded ``trio`` memory channel of ``[rpc] ws_queue_size`` items (a response, or
the pushes one publishing call made to one subscription, e.g. one block's matching events), so a
connection's responses and pushes leave in the order queued and each subscription's pushes in the
order published. Requests of one connection run concurrently (a ``qnx_sendRawTransactionAndWait``
does not hold up the calls behind it); their responses go out as they finish, matched by ``id``.

A client that reads slower than its pushes arrive fills the outbox; the next push finds it full and
the connection is cut off: its subscriptions end at once (the node never waits for it), and it is
closed with code 1008 (policy violation) and a reason once hypercorn can write again. Hypercorn shields
its socket writes from cancellation, so a client that never reads again keeps only this task parked
(and one connection slot) until its TCP connection breaks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import trio

from crypto.hashing import Hash32
from node.rpc.errors import LIMIT_EXCEEDED, NOT_FOUND, RPCError
from node.rpc.pubsub import EventFilter, Subscription

if TYPE_CHECKING:
    from node.rpc.server import RPCApp

log = logging.getLogger("qenex.rpc.ws")

MAX_IN_FLIGHT: Final = 16
"""Most messages of one connection being handled at once; the reader waits for a free slot beyond."""

CLOSE_POLICY: Final = 1008
"""RFC 6455 §7.4.1 "policy violation": the close code of a client cut off for reading too slowly."""

@dataclass
class CallContext:
    """Who makes a call and over what: the client IP, the transport, whether admin methods are
    authorized, the WebSocket connection (None over HTTP), and what the call leaves for the transport:
    subscriptions to activate once the response is queued, the HTTP status and headers of an error."""

    client: str = ""
    transport: str = "http"
    admin: bool = False
    ws: WSConnection | None = None
    new_subscriptions: list[Subscription] = field(default_factory=list)
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Outgoing = str | tuple[str, list[Any]]
"""Outbox item: response text, or ``(subscription id, results)``: one push per result (serialised by the
writer, off the node's commit path)."""


def push_text(subscription: str, result: Any) -> str:
    """The JSON text of one push: ``{"jsonrpc": "2.0", "method": "qnx_subscription", "params":
    {"subscription": id, "result": result}}`` (a JSON-RPC 2.0 notification, as ``eth_subscribe``)."""
    return json.dumps({"jsonrpc": "2.0", "method": "qnx_subscription",
                       "params": {"subscription": subscription, "result": result}}, separators=(",", ":"))


class WSConnection:
    """A ``/ws`` connection once accepted; implements ``pubsub.Subscriber`` for its subscriptions."""

    def __init__(self, app: RPCApp, context: CallContext, *, queue_size: int, max_subscriptions: int,
                 max_message_bytes: int) -> None:
        """``context`` is the handshake's (client IP, admin authorization); ``queue_size`` bounds the outbox."""
        self.app = app
        self.context = replace(context, transport="ws", ws=self)
        self.max_subscriptions = max_subscriptions
        self.max_message_bytes = max_message_bytes
        self.subscriptions: dict[str, Subscription] = {}
        self.closed = False
        self.close_reason: str | None = None
        """Why the server cut the connection off (None: the client left)."""
        self._queue_size = queue_size
        self._out_send, self._out_recv = trio.open_memory_channel[Outgoing](queue_size)
        self._scope = trio.CancelScope()

    # --- pubsub.Subscriber ---------------------------------------------------------------------

    def deliver(self, subscription: str, results: list[Any]) -> bool:
        """Queue pushes without waiting; a full outbox cuts the connection off (returns False)."""
        if self.closed:
            return False
        try:
            self._out_send.send_nowait((subscription, results))
        except trio.WouldBlock:
            self.cut_off(f"too slow: {self._queue_size} items waiting to be read")
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def cut_off(self, reason: str) -> None:
        """End every subscription now and close the connection with 1008 and ``reason``."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._end_subscriptions()
        self._scope.cancel()
        self.app.ws_cut_off += 1
        log.warning("websocket client %s cut off: %s", self.context.client, reason)

    # --- subscriptions -------------------------------------------------------------------------

    def subscribe(self, kind: str, argument: EventFilter | Hash32 | None, context: CallContext,
                  initial: Any = None) -> str:
        """Register a subscription (inactive until its response is queued); returns its id.

        ``initial`` (not None) is pushed first (a txStatus already known). Raises ``RPCError``
        -32005 beyond ``max_subscriptions``.
        """
        if len(self.subscriptions) >= self.max_subscriptions:
            raise RPCError(LIMIT_EXCEEDED, "too many subscriptions on this connection",
                           {"limit": self.max_subscriptions})
        if self.closed:
            raise RPCError(LIMIT_EXCEEDED, "connection is closing")
        hub = self.app.node.pubsub
        sub = Subscription(hub.new_id(), kind, self, max_buffered=self._queue_size,
                           event_filter=argument if isinstance(argument, EventFilter) else None,
                           tx_hash=argument if kind == "txStatus" else None)  # type: ignore[arg-type]
        hub.add(sub)
        self.subscriptions[sub.id] = sub
        if initial is not None:
            sub.push([initial])
        context.new_subscriptions.append(sub)
        return sub.id

    def unsubscribe(self, sid: Any) -> bool:
        """End subscription ``sid`` of this connection. Raises ``RPCError`` -32001 if there is none."""
        sub = self.subscriptions.pop(sid, None) if isinstance(sid, str) else None
        if sub is None:
            raise RPCError(NOT_FOUND, "no such subscription on this connection", sid)
        self.app.node.pubsub.remove(sub)
        return True

    def _end_subscriptions(self) -> None:
        hub = self.app.node.pubsub
        for sub in self.subscriptions.values():
            hub.remove(sub)
        self.subscriptions.clear()

    # --- I/O -----------------------------------------------------------------------------------

    async def run(self, receive: Any, send: Any) -> None:
        """Serve the accepted connection until the client leaves or is cut off (then close with 1008)."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, send)
                    await self._reader(receive, nursery)
                    nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            self._end_subscriptions()
            self._out_send.close()
        if self.close_reason is not None:
            await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": self.close_reason[:120]})

    async def _reader(self, receive: Any, nursery: trio.Nursery) -> None:
        slots = trio.Semaphore(MAX_IN_FLIGHT)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            data = text.encode() if text is not None else (message.get("bytes") or b"")
            await slots.acquire()
            nursery.start_soon(self._handle, data, slots)

    async def _handle(self, data: bytes, slots: trio.Semaphore) -> None:
        context = replace(self.context, new_subscriptions=[])
        try:
            response: Any
            if len(data) > self.max_message_bytes:
                err = RPCError(LIMIT_EXCEEDED, "message too large", {"limit": self.max_message_bytes})
                response = {"jsonrpc": "2.0", "id": None, "error": err.to_json()}
            else:
                _, response = await self.app.handle_body(data, context)
            if response is not None:
                await self._out_send.send(json.dumps(response, separators=(",", ":")))
            for sub in context.new_subscriptions:
                if self.subscriptions.get(sub.id) is sub:
                    sub.activate()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            slots.release()

    async def _writer(self, send: Any) -> None:
        async for item in self._out_recv:
            if isinstance(item, str):
                await send({"type": "websocket.send", "text": item})
                continue
            subscription, results = item
            for result in results:
                await send({"type": "websocket.send", "text": push_text(subscription, result)})
