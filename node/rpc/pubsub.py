"""Publish/subscribe for ``qnx_subscribe``: the hub the node publishes to, and the subscriptions.

The node calls the hub on the Trio thread, synchronously, from the places where things happen:
``Node.commit`` (``block_committed``: new head, receipt events, committed transactions),
``Node._admit`` (``tx_admitted``) and wherever a pending transaction leaves the mempool uncommitted
(``tx_dropped``). Each call costs O(1) when nobody subscribes (a length test), and otherwise builds
each JSON result once and hands it to every matching subscription. Nothing here awaits: a
subscription hands its results to its ``Subscriber`` (a WebSocket connection, ``node.rpc.ws``) with
``deliver``, which must not block either (``trio.MemorySendChannel.send_nowait``); a subscriber that
cannot take more is cut off by its owner, never waited for, so a slow client never slows a commit.
What one call publishes to one subscription is delivered as one batch (a list of results): a block
with 2,000 matching events is one item in the subscriber's queue, not 2,000, so queues bound how far
a client lags in blocks, and a burst does not cut off a client that keeps up.

Kinds (shared/RPC.md ``qnx_subscribe``; each result is what one push carries in ``params.result``):

* ``["newHeads"]``: each committed header, in height order, as ``qnx_getBlockByNumber`` gives it in
  ``header`` (``jsonfmt.header_json``).
* ``["events", filter]``: each receipt event matching ``filter`` (``EventFilter``), in block order,
  as in receipts (``jsonfmt.event_json``) plus ``txHash``, ``blockHeight``, ``blockHash``, ``index``
  (of the transaction in its block) and ``eventIndex`` (of the event in its receipt).
* ``["txStatus", txHash]``: ``{"status": "admitted", "txHash"}`` when the node admits it to its
  mempool, ``{"status": "committed", "txHash", "receipt"}`` once its block is committed (the receipt as
  ``qnx_getTransactionReceipt`` gives it), ``{"status": "dropped", "txHash", "reason"}`` when it leaves
  the mempool uncommitted (it may be admitted again later).

Ordering: results of one subscription reach the subscriber in the order the node published them.
A new subscription buffers its results until ``activate`` (the server activates it once the response
carrying its id is queued, as geth does), so a client never sees a push for an id it does not know.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from crypto.hashing import Hash32
from node.rpc import jsonfmt as J
from node.rpc.errors import INVALID_PARAMS, RPCError
from state.types import Block, Event, Receipt

log = logging.getLogger("qenex.rpc.pubsub")

KINDS: Final = ("newHeads", "events", "txStatus")
"""Subscription kinds, the first param of ``qnx_subscribe``."""

TOPIC_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "Transfer": ("from", "to"),
    "Approval": ("owner", "spender"),
    "MinterChanged": ("old", "new"),
    "PairCreated": ("token0", "token1"),
    "Mint": ("sender",),
    "Burn": ("sender", "to"),
    "Swap": ("sender", "to"),
}
"""Names of the indexed topics of the built-in contracts' events (docs/protocol.md §7), so a filter can
say ``{"name": "Transfer", "indexed": {"to": "0x…"}}``; any event's topics can be named by position."""

MAX_TOPIC_ALTERNATIVES: Final = 64
"""Most values one topic position of an events filter may list."""


class Subscriber(Protocol):
    """Who receives a subscription's results (a WebSocket connection). Called on the Trio thread."""

    def deliver(self, subscription: str, results: list[Any]) -> bool:
        """Queue pushes (one per result, in order) without blocking; False if the subscriber is gone
        or was just cut off."""
        ...  # pragma: no cover

    def cut_off(self, reason: str) -> None:
        """Disconnect this subscriber because it fell behind (``reason`` for the close frame)."""
        ...  # pragma: no cover


def _json_form(value: Any, where: str) -> Any:
    """A filter value in the JSON form ``jsonfmt.value_to_json`` gives topics. Raises ``RPCError`` -32602."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if value.startswith("0x"):
            return J.hexb(J.parse_hex(value, where))
        return value
    if isinstance(value, dict) and set(value) == {"int"}:
        return J.value_to_json(J.value_from_json(value))
    raise RPCError(INVALID_PARAMS, f"{where} must be a value (0x-hex, integer, string or boolean)")


@dataclass(frozen=True)
class EventFilter:
    """Which events an ``["events", filter]`` subscription gets; every given part must match.

    JSON: ``{"contract"?: address, "name"?: str, "indexed"?: list | object}``. ``indexed`` constrains
    the event's topics: a list gives them by position (``null`` matches anything, a value must equal
    the topic, a list of values matches any of them; ``[null, "0xabc…"]`` is "second topic is 0xabc…");
    an object maps positions (``"0"``, ``"1"`` …) or, for the built-in events (``TOPIC_NAMES``, with
    ``name`` given), topic names to such constraints. Values compare in their JSON form (hex
    lowercased; integers as decimal strings, JSON numbers or ``{"int": "…"}``). An event with fewer
    topics than a constrained position does not match. ``{}`` matches every event.
    """

    contract: bytes | None = None
    name: str | None = None
    topics: tuple[frozenset[Any] | None, ...] = ()

    @classmethod
    def parse(cls, obj: Any) -> EventFilter:
        """The filter of a ``qnx_subscribe`` param. Raises ``RPCError`` -32602 naming what is wrong."""
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise RPCError(INVALID_PARAMS, "the events filter must be an object {contract?, name?, indexed?}")
        unknown = set(obj) - {"contract", "name", "indexed"}
        if unknown:
            raise RPCError(INVALID_PARAMS, f"unknown events filter field(s): {', '.join(sorted(unknown))}")
        contract = None if obj.get("contract") is None else J.parse_hex(obj["contract"], "contract", 20)
        name = obj.get("name")
        if name is not None and not isinstance(name, str):
            raise RPCError(INVALID_PARAMS, "the events filter name must be a string")
        indexed = obj.get("indexed")
        by_position: dict[int, Any] = {}
        if isinstance(indexed, list):
            by_position = dict(enumerate(indexed))
        elif isinstance(indexed, dict):
            names = TOPIC_NAMES.get(name or "", ())
            for key, want in indexed.items():
                if key.isdigit() and len(key) <= 2:
                    by_position[int(key)] = want
                elif key in names:
                    by_position[names.index(key)] = want
                else:
                    known = f"topic names of {name}: {', '.join(names)}" if names else "no topic names"
                    raise RPCError(INVALID_PARAMS, f"indexed key {key!r} is neither a position nor a topic name "
                                                   f"({known}; name a built-in event to use names)")
        elif indexed is not None:
            raise RPCError(INVALID_PARAMS, "indexed must be a list (by position) or an object")
        if len(by_position) > 16 or any(p >= 16 for p in by_position):
            raise RPCError(INVALID_PARAMS, "indexed constrains at most topics 0..15")
        topics: list[frozenset[Any] | None] = [None] * (max(by_position) + 1 if by_position else 0)
        for position, want in by_position.items():
            if want is None:
                continue
            options = want if isinstance(want, list) else [want]
            if not options or len(options) > MAX_TOPIC_ALTERNATIVES:
                raise RPCError(INVALID_PARAMS, f"topic {position}: give 1..{MAX_TOPIC_ALTERNATIVES} values")
            topics[position] = frozenset(_json_form(v, f"indexed topic {position}") for v in options)
        while topics and topics[-1] is None:
            topics.pop()
        return cls(contract, name, tuple(topics))

    def matches(self, event: Event) -> bool:
        """Whether ``event`` passes the filter."""
        if self.contract is not None and event.contract != self.contract:
            return False
        if self.name is not None and event.name != self.name:
            return False
        if len(self.topics) > len(event.topics):
            return False
        return all(want is None or J.value_to_json(have) in want
                   for want, have in zip(self.topics, event.topics, strict=False))


def parse_subscribe_params(params: list[Any]) -> tuple[str, EventFilter | Hash32 | None]:
    """``qnx_subscribe`` params -> (kind, its argument). Raises ``RPCError`` -32602."""
    kind = params[0] if params else None
    if kind not in KINDS:
        raise RPCError(INVALID_PARAMS, f"subscription kind must be one of {', '.join(KINDS)}")
    arg = params[1] if len(params) > 1 else None
    if kind == "newHeads":
        if arg is not None:
            raise RPCError(INVALID_PARAMS, "newHeads takes no argument")
        return kind, None
    if kind == "events":
        return kind, EventFilter.parse(arg)
    return kind, Hash32(J.parse_hex(arg, "txHash", 32))


class Subscription:
    """One subscription: its id, kind and argument, and the ``Subscriber`` its results go to.

    Results published before ``activate`` wait in a buffer of at most ``max_buffered`` batches (beyond
    it the subscriber is cut off, as if its queue were full).
    """

    def __init__(self, sid: str, kind: str, owner: Subscriber, *, event_filter: EventFilter | None = None,
                 tx_hash: Hash32 | None = None, max_buffered: int = 1024) -> None:
        """A subscription not yet active (see ``activate``)."""
        self.id = sid
        self.kind = kind
        self.owner = owner
        self.event_filter = event_filter
        self.tx_hash = tx_hash
        self._max_buffered = max_buffered
        self._buffer: list[Any] | None = []

    def push(self, results: list[Any]) -> None:
        """Hand a batch of ``results`` to the subscriber (or buffer it until ``activate``); never blocks."""
        if self._buffer is None:
            self.owner.deliver(self.id, results)
            return
        self._buffer.append(results)
        if len(self._buffer) > self._max_buffered:
            self._buffer = None
            self.owner.cut_off(f"subscription {self.id}: more than {self._max_buffered} batches waiting")

    def activate(self) -> None:
        """Deliver what was buffered, in order; from now on results go straight to the subscriber."""
        buffered, self._buffer = self._buffer, None
        for results in buffered or ():
            if not self.owner.deliver(self.id, results):
                return


class Hub:
    """Subscriptions by kind, and the node's publishing calls (see the module docstring).

    Not thread-safe: everything runs on the node's Trio thread. Ids are ``0x``-hex of a counter,
    unique within the hub's life (a subscription is only ever addressed on its own connection).
    """

    def __init__(self) -> None:
        """An empty hub."""
        self._next = 0
        self._heads: dict[str, Subscription] = {}
        self._events: dict[str, Subscription] = {}
        self._txs: dict[Hash32, dict[str, Subscription]] = {}
        self._count = 0

    def __len__(self) -> int:
        """Number of subscriptions registered."""
        return self._count

    def new_id(self) -> str:
        """A fresh subscription id."""
        self._next += 1
        return f"0x{self._next:x}"

    def add(self, sub: Subscription) -> None:
        """Register ``sub`` (it receives what is published from now on). Raises ``ValueError`` for an
        unknown kind or a txStatus subscription without its hash (a local bug)."""
        if sub.kind == "newHeads":
            self._heads[sub.id] = sub
        elif sub.kind == "events":
            self._events[sub.id] = sub
        elif sub.kind == "txStatus" and sub.tx_hash is not None:
            self._txs.setdefault(sub.tx_hash, {})[sub.id] = sub
        else:
            raise ValueError(f"cannot register a {sub.kind!r} subscription without its argument")
        self._count += 1

    def remove(self, sub: Subscription) -> bool:
        """Unregister ``sub``; False if it was not registered."""
        if sub.kind == "newHeads":
            found = self._heads.pop(sub.id, None)
        elif sub.kind == "events":
            found = self._events.pop(sub.id, None)
        else:
            subs = self._txs.get(sub.tx_hash) if sub.tx_hash is not None else None
            found = None if subs is None else subs.pop(sub.id, None)
            if subs is not None and not subs:
                del self._txs[sub.tx_hash]  # type: ignore[arg-type]
        if found is None:
            return False
        self._count -= 1
        return True

    # --- what the node publishes -----------------------------------------------------------------

    def block_committed(self, block: Block, receipts: Sequence[Receipt]) -> None:
        """``block`` was committed with ``receipts`` (one per transaction, in order).

        Never raises: it runs inside ``Node.commit``, which a bug here must not stop (it is logged).
        """
        if not self._count:
            return
        try:
            self._block_committed(block, receipts)
        except Exception:
            log.exception("publishing block %d to subscribers failed", block.height)

    def _block_committed(self, block: Block, receipts: Sequence[Receipt]) -> None:
        if self._heads:
            head = [J.header_json(block.header)]
            for sub in list(self._heads.values()):
                sub.push(head)
        if self._events:
            matched: dict[str, list[Any]] = {}
            filters = list(self._events.values())
            for index, receipt in enumerate(receipts):
                for position, event in enumerate(receipt.events):
                    result = None
                    for sub in filters:
                        if sub.event_filter is not None and sub.event_filter.matches(event):
                            if result is None:
                                result = {**J.event_json(event), "txHash": J.hexb(receipt.tx_hash),
                                          "blockHeight": block.height, "blockHash": J.hexb(block.hash),
                                          "index": index, "eventIndex": position}
                            matched.setdefault(sub.id, []).append(result)
            for sub in filters:
                if sub.id in matched:
                    sub.push(matched[sub.id])
        if self._txs:
            for index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=False)):
                subs = self._txs.get(tx.hash)
                if subs:
                    result = [{"status": "committed", "txHash": J.hexb(tx.hash),
                               "receipt": J.receipt_json(receipt, block.height, block.hash, index)}]
                    for sub in list(subs.values()):
                        sub.push(result)

    def tx_admitted(self, tx_hash: Hash32) -> None:
        """``tx_hash`` entered the mempool."""
        if self._txs:
            subs = self._txs.get(tx_hash)
            if subs:
                result = [{"status": "admitted", "txHash": J.hexb(tx_hash)}]
                for sub in list(subs.values()):
                    sub.push(result)

    def tx_dropped(self, tx_hash: Hash32, reason: str) -> None:
        """``tx_hash`` left the mempool uncommitted, for ``reason``."""
        if self._txs:
            subs = self._txs.get(tx_hash)
            if subs:
                result = [{"status": "dropped", "txHash": J.hexb(tx_hash), "reason": reason}]
                for sub in list(subs.values()):
                    sub.push(result)
