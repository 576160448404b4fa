"""Prometheus metrics of one node, served at ``GET /metrics`` in the text exposition format.

Built on ``prometheus_client`` with one ``CollectorRegistry`` per node (tests run several nodes in
one process). Two kinds of series:

* events counted where they happen (``NodeMetrics`` attributes): commits, commit latency, block
  size, view changes, equivocation evidence, messages and payload bytes in/out per message type,
  rejected transactions per reason, refused peer messages;
* levels read from the node at scrape time (``_NodeCollector``): height, view, low watermark,
  mempool size and bytes, connected peers, evidence on record, and the process's CPU and memory
  (``prometheus_client.ProcessCollector``, from ``/proc``);
* P2P traffic counted by the peer network in ``NodeMetrics.p2p`` (``p2p.network.TrafficCounters``)
  and read at scrape time: bytes on the wire each way (sealed and framed, handshakes included;
  ``qenex_p2p_{sent,received}_bytes`` count message payloads only), sends refused per lane, reads
  paused by the inbound rate limit.

Every label value the node can produce (message types, rejection and drop reasons, equivocation
kinds) is created at start, so each series reads 0 before its first event instead of being absent
(Prometheus "Instrumentation" best practices: avoid missing metrics).

Names follow the Prometheus conventions (base units: seconds, bytes; ``_total`` for counters).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consensus.messages import CHECKPOINT, COMMIT, KIND_NAMES, NEW_VIEW, PRE_PREPARE, PREPARE, VIEW_CHANGE
from node import messages as M
from p2p.network import TrafficCounters

if TYPE_CHECKING:
    from node.node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of the Prometheus text format."""

MESSAGE_TYPES = {
    M.TX: "tx", M.TXS: "txs", M.PRE_PREPARE: "pre_prepare", M.VOTE: "vote", M.STATUS: "status",
    M.GET_BLOCKS: "get_blocks", M.BLOCKS: "blocks", M.VIEW_CHANGE: "view_change", M.NEW_VIEW: "new_view",
    M.CHECKPOINT: "checkpoint", M.PRE_PREPARE_COMPACT: "pre_prepare_compact", M.GET_PRE_PREPARE: "get_pre_prepare",
}
"""Label values of the ``type`` label, by P2P message type (node/messages.py)."""
COMPACT_OUTCOMES = ("rebuilt", "fetched", "stale")
"""Label values of ``qenex_compact_proposals_total``'s ``outcome`` label."""

REJECT_REASONS = (
    "malformed", "bad signature",  # Node.admit: DecodeError, InvalidSignature
    "wrong chain id", "no calls", "gas limit too high", "intrinsic gas too low",  # VM.check_static
    "nonce too low", "nonce too high", "nonce already pending", "mempool full",  # Mempool.add
    "node busy", "already committed", "gossip backlog full",  # Node._admit, Node.on_message
)
"""Values of the ``reason`` label of ``qenex_transactions_rejected`` (``TxRejected.reason`` and the node's own)."""

DROP_REASONS = ("evicted", "replaced", "expired", "rejected", "flushed")
"""Values of the ``reason`` label of ``qenex_mempool_dropped`` (first word of ``Node._record_dropped``'s reason)."""

EVIDENCE_KINDS = tuple(KIND_NAMES[k] for k in (PRE_PREPARE, PREPARE, COMMIT, VIEW_CHANGE, NEW_VIEW, CHECKPOINT))
"""Values of the ``kind`` label of ``qenex_equivocations_detected``: every kind the replica records
evidence for (conflicting votes, ``Replica._record_evidence``; conflicting VIEW-CHANGEs and NEW-VIEWs
for one view; conflicting CHECKPOINTs for one seq)."""


class _NodeCollector(Collector):
    """Gauges read from the node, and the P2P traffic counters, when Prometheus scrapes (no bookkeeping
    on the hot path)."""

    def __init__(self, node: Node, traffic: TrafficCounters) -> None:
        self._node = node
        self._traffic = traffic

    def collect(self) -> Iterator[Metric]:
        node = self._node
        replica = node.replica
        peers = len(node.net.connected()) if node.net is not None else 0
        traffic = self._traffic
        for name, doc, value in (
            ("qenex_height", "Height of the newest committed block.", node.chain.head.height),
            ("qenex_view", "Current PBFT view (Castro & Liskov §4.4).", replica.view),
            ("qenex_view_active", "1 while this node takes part in its view, 0 during a view change.",
             int(replica.active)),
            ("qenex_low_watermark", "Sequence number of the last stable checkpoint (§4.3).", replica.low_watermark),
            ("qenex_mempool_transactions", "Pending transactions in the mempool.", len(node.mempool)),
            ("qenex_mempool_bytes", "Encoded size of the pending transactions, bytes.", node.mempool.size_bytes),
            ("qenex_peers_connected", "Authenticated P2P peers connected now.", peers),
            ("qenex_validators", "Validators in the set (n).", node.n),
            ("qenex_equivocation_evidence", "Equivocations held as evidence in this node's store.",
             node.evidence_count),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        yield CounterMetricFamily("qenex_p2p_wire_sent_bytes", "Bytes written to peers' sockets: sealed and "
                                  "framed messages and handshakes.", value=traffic.wire_bytes_sent)
        yield CounterMetricFamily("qenex_p2p_wire_received_bytes", "Bytes read from peers' sockets: sealed and "
                                  "framed messages and handshakes.", value=traffic.wire_bytes_received)
        refused = CounterMetricFamily("qenex_p2p_sends_refused", "Messages not queued for a peer because its "
                                      "send lane was full (urgent: consensus, bulk: gossip).", labels=["lane"])
        refused.add_metric(["urgent"], traffic.refused_urgent)
        refused.add_metric(["bulk"], traffic.refused_bulk)
        yield refused
        yield CounterMetricFamily("qenex_p2p_inbound_throttled", "Pauses in reading a peer that exceeded its "
                                  "inbound byte rate.", value=traffic.throttled_reads)


class NodeMetrics:
    """The metrics of one node; the node calls the ``on_*`` hooks, ``render`` serves a scrape."""

    def __init__(self, node: Node) -> None:
        """Register every series in a registry of this node's own."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.blocks = Counter("qenex_blocks_committed", "Blocks committed by this node.", registry=r)
        self.transactions = Counter("qenex_transactions_committed", "Transactions in committed blocks.", registry=r)
        self.commit_latency = Histogram(
            "qenex_commit_latency_seconds",
            "Time from a block's header timestamp (its proposal) to its commit on this node, seconds.",
            buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0), registry=r)
        self.block_txs = Histogram("qenex_block_transactions", "Transactions per committed block.",
                                   buckets=(0, 1, 10, 50, 100, 250, 500, 1000, 2500, 5000), registry=r)
        self.block_bytes = Histogram("qenex_block_size_bytes", "Encoded size of committed blocks, bytes.",
                                     buckets=(1e3, 1e4, 1e5, 5e5, 1e6, 4e6, 16e6), registry=r)
        self.view_changes = Counter("qenex_view_changes", "Views installed after a view change (§4.4).", registry=r)
        self.timeouts = Counter("qenex_view_timeouts", "Progress timer expiries that started a view change.",
                                registry=r)
        self.evidence = Counter("qenex_equivocations_detected",
                                "Conflicting signed messages of one validator for one view and sequence number.",
                                ["kind"], registry=r)
        self.checkpoints = Counter("qenex_checkpoints_stable", "Checkpoints that became stable (§4.3).", registry=r)
        self.divergences = Counter("qenex_state_divergences",
                                   "Stable checkpoints naming another block than this node committed.", registry=r)
        self.messages_in = Counter("qenex_p2p_messages_received", "P2P messages received, by type.", ["type"],
                                   registry=r)
        self.messages_out = Counter("qenex_p2p_messages_sent", "P2P messages sent (per peer), by type.", ["type"],
                                    registry=r)
        self.bytes_in = Counter("qenex_p2p_received_bytes", "P2P message (payload) bytes received.", registry=r)
        self.bytes_out = Counter("qenex_p2p_sent_bytes", "P2P message (payload) bytes sent (per peer).", registry=r)
        self.bad_messages = Counter("qenex_p2p_bad_messages", "Undecodable or invalid P2P messages refused.",
                                    registry=r)
        self.rejected = Counter("qenex_transactions_rejected", "Transactions refused at admission, by reason.",
                                ["reason"], registry=r)
        self.dropped = Counter("qenex_mempool_dropped", "Pending transactions dropped uncommitted, by reason "
                               "(evicted, replaced, expired).", ["reason"], registry=r)
        self.synced_blocks = Counter("qenex_catchup_blocks", "Certified blocks applied by catch-up.", registry=r)
        self.compact = Counter("qenex_compact_proposals", "Compact PRE-PREPAREs received, by outcome: rebuilt from "
                               "the mempool, fetched (the full one asked of the sender after waiting for "
                               "missing transactions), stale (an older view or a decided one that could not "
                               "be rebuilt).", ["outcome"], registry=r)
        for outcome in COMPACT_OUTCOMES:
            self.compact.labels(outcome)
        for label in MESSAGE_TYPES.values():
            self.messages_in.labels(label)
            self.messages_out.labels(label)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for kind in EVIDENCE_KINDS:
            self.evidence.labels(kind)
        self.p2p = TrafficCounters()
        """P2P traffic totals, counted by the node's ``PeerNetwork`` (passed as ``counters=``)."""
        ProcessCollector(registry=r)
        r.register(_NodeCollector(node, self.p2p))

    def on_message(self, kind: int, size: int, *, sent: int = 0) -> None:
        """Count one message of P2P type ``kind`` and ``size`` bytes: received, or ``sent`` to that many peers."""
        label = MESSAGE_TYPES.get(kind, "unknown")
        if sent:
            self.messages_out.labels(label).inc(sent)
            self.bytes_out.inc(size * sent)
        else:
            self.messages_in.labels(label).inc()
            self.bytes_in.inc(size)

    def on_commit(self, txs: int, size: int, latency_s: float) -> None:
        """A block of ``txs`` transactions and ``size`` bytes committed ``latency_s`` seconds after its timestamp."""
        self.blocks.inc()
        self.transactions.inc(txs)
        self.block_txs.observe(txs)
        self.block_bytes.observe(size)
        self.commit_latency.observe(max(0.0, latency_s))

    def render(self) -> bytes:
        """The current values in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
